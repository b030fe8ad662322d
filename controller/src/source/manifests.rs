//! Standalone source: Kubernetes objects from a YAML file or a directory of YAML files.
//!
//! The files are read at start and again whenever the file system reports a change. A change
//! that arrives while a read is in progress triggers exactly one more read when it ends (no timer
//! debounce). A file that fails to parse keeps the last good snapshot in service and is reported
//! once until it changes. Each file's objects are cached by its identity and modification time,
//! so a change to one file re-parses only that file, and only its objects are sent on as
//! changes: moving one EndpointSlice costs the same with ten or ten thousand Ingresses loaded.
//! When the events name only manifest files of the directory, those files alone are looked at
//! (with their other names: symlinks and hard links in the directory), not every file's
//! `stat`; any other event (a mounted volume's symlink swap, lost events, a single-file source)
//! and any read after a failed one look at them all. A symlink to a file outside the directory
//! is read again only then: no event names it.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use ostium_model::TableReader;
use ostium_translate::{Kind, KindVisitor, Objects, for_each_kind, parse_manifests};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::store::{Change, Update};

/// Starts watching `path` on a thread of its own, sending a snapshot after each good read.
pub(crate) fn spawn(
    path: PathBuf,
    updates: UnboundedSender<Update>,
    reader: TableReader,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let metadata = fs::metadata(&path).with_context(|| format!("--manifests {}", path.display()))?;
    // Events name absolute paths, and reads must name files as they do.
    let path = std::path::absolute(&path).with_context(|| format!("--manifests {}", path.display()))?;
    let watched = if metadata.is_dir() { path.clone() } else { parent(&path) };

    let (tx, rx) = mpsc::channel();
    let named_only = metadata.is_dir().then(|| path.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(read) = Read::after(&event, named_only.as_deref()) {
            let _ = tx.send(read);
        }
    })
    .context("cannot watch the manifests")?;
    watcher
        .watch(&watched, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", watched.display()))?;

    std::thread::Builder::new().name("manifests".into()).spawn(move || {
        let _watcher = watcher; // dropping it would stop the events
        let mut manifests = Manifests::new(path);
        let mut last_error = None;
        let mut read = Read::All;
        loop {
            // After a failed read, everything is read again until one succeeds.
            let result = match (&read, &last_error) {
                (Read::Files(files), None) => manifests.read_files(files),
                _ => manifests.read_changes(),
            };
            match result {
                Ok(changes) => {
                    last_error = None;
                    for change in changes {
                        if updates.send(change).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    metrics.source_error();
                    let message = format!("{e:#}");
                    if last_error.as_ref() != Some(&message) {
                        let serving = if reader.is_ready() { "the last good table" } else { "nothing yet" };
                        tracing::error!("manifests not loaded, serving {serving}: {message}");
                    }
                    last_error = Some(message);
                }
            }
            // Wait for a change, then take every change already queued with it.
            let Ok(next) = rx.recv() else { return };
            read = next;
            while let Ok(more) = rx.try_recv() {
                read.add(more);
            }
        }
    })?;
    Ok(())
}

/// Reads of the manifest files, with each file's parsed objects cached.
#[derive(Debug)]
pub(crate) struct Manifests {
    path: PathBuf,
    cache: HashMap<PathBuf, (FileStamp, Arc<Objects>)>,
    /// Whether a complete snapshot has been handed out.
    snapshot_sent: bool,
}

/// What identifies one version of a file: a rewrite or a rename onto it changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// What a file system event asks to read again.
#[derive(Debug, PartialEq)]
enum Read {
    /// These manifest files of the directory changed (and their other names), nothing else.
    Files(Vec<PathBuf>),
    /// Every file: the event may concern any (a symlink or a directory that files resolve
    /// through, a lost event, a single-file source).
    All,
}

impl Read {
    /// What an event asks to read, if anything, when the source is the directory `dir`
    /// (`None`: a file).
    fn after(event: &notify::Result<notify::Event>, dir: Option<&Path>) -> Option<Self> {
        let event = match event {
            // Events were lost: any file may have changed.
            Ok(event) if event.need_rescan() => return Some(Self::All),
            Ok(event) if !is_change(&event.kind) => return None,
            Ok(event) => event,
            Err(_) => return Some(Self::All),
        };
        let Some(dir) = dir else { return Some(Self::All) };
        let manifest_of_dir = |p: &PathBuf| p.parent() == Some(dir) && is_manifest_name(p);
        Some(match event.paths.is_empty() || !event.paths.iter().all(manifest_of_dir) {
            true => Self::All,
            false => Self::Files(event.paths.clone()),
        })
    }

    fn add(&mut self, other: Read) {
        match (&mut *self, other) {
            (Self::Files(files), Self::Files(more)) => files.extend(more),
            _ => *self = Self::All,
        }
    }
}

/// A name the directory's listing takes as a manifest: YAML or JSON, not hidden.
fn is_manifest_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let is_manifest = [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext));
    is_manifest && !name.starts_with('.')
}

impl Manifests {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, cache: HashMap::new(), snapshot_sent: false }
    }

    /// What changed since the last call: the first time, a snapshot of everything; after that,
    /// the objects of the files that changed, and deletions of the objects they no longer
    /// hold (unless another file holds them too). Any file failing fails the whole read and
    /// changes nothing.
    pub(crate) fn read_changes(&mut self) -> anyhow::Result<Vec<Update>> {
        let previous = self.cache.clone();
        self.refresh()?;
        if !std::mem::replace(&mut self.snapshot_sent, true) {
            return Ok(vec![Update::Snapshot(self.merged())]);
        }
        let mut files: Vec<PathBuf> = self.cache.keys().chain(previous.keys()).cloned().collect();
        files.sort();
        files.dedup();
        Ok(self.changes(&files, &previous))
    }

    /// The same for a change that concerns only these files of the directory (they may have
    /// been written, replaced or removed): the other files are not looked at.
    fn read_files(&mut self, files: &[PathBuf]) -> anyhow::Result<Vec<Update>> {
        if !self.snapshot_sent {
            return self.read_changes();
        }
        let mut files = files.to_vec();
        // Other names of the same files (symlinks, hard links) changed with them.
        let inode = |m: fs::Metadata| (m.dev(), m.ino());
        let mut inodes: Vec<(u64, u64)> =
            files.iter().filter_map(|f| fs::metadata(f).ok()).map(inode).collect();
        inodes
            .extend(files.iter().filter_map(|f| self.cache.get(f)).map(|(stamp, _)| (stamp.dev, stamp.ino)));
        let aliases = self.cache.iter().filter(|(_, (stamp, _))| inodes.contains(&(stamp.dev, stamp.ino)));
        let aliases: Vec<PathBuf> = aliases.map(|(file, _)| file.clone()).collect();
        files.extend(aliases);
        files.sort();
        files.dedup();
        let mut read = Vec::with_capacity(files.len());
        for file in &files {
            let entry = match file_metadata(file)? {
                Some(metadata) => Some(self.parsed(file, &metadata)?),
                None => None,
            };
            read.push(entry);
        }
        let mut previous = HashMap::with_capacity(files.len());
        for (file, entry) in files.iter().zip(read) {
            let old = match entry {
                Some(entry) => self.cache.insert(file.clone(), entry),
                None => self.cache.remove(file),
            };
            if let Some(old) = old {
                previous.insert(file.clone(), old);
            }
        }
        Ok(self.changes(&files, &previous))
    }

    /// The changes to send for `files`, whose entries were `previous` and are now the cache's.
    fn changes(
        &self,
        files: &[PathBuf],
        previous: &HashMap<PathBuf, (FileStamp, Arc<Objects>)>,
    ) -> Vec<Update> {
        let empty = Arc::new(Objects::default());
        let mut updates = Vec::new();
        for file in files {
            let old = previous.get(file).map_or(&empty, |(_, parsed)| parsed);
            let new = self.cache.get(file).map_or(&empty, |(_, parsed)| parsed);
            if Arc::ptr_eq(old, new) {
                continue;
            }
            for_each_kind(&mut FileChanges { old, new, files: &self.cache, updates: &mut updates });
        }
        updates
    }

    /// Reads every manifest file into one snapshot. Any file failing fails the whole read.
    pub(crate) fn load(&mut self) -> anyhow::Result<Objects> {
        self.refresh()?;
        Ok(self.merged())
    }

    /// Every cached file's objects in one snapshot; a later file wins over an earlier one.
    fn merged(&self) -> Objects {
        let mut files: Vec<_> = self.cache.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        let mut objects = Objects::default();
        for (_, (_, parsed)) in files {
            objects.extend(parsed);
        }
        objects
    }

    /// Brings the cache up to date with the files, parsing the changed ones. Any file failing
    /// fails the whole read and keeps the cache as it was.
    fn refresh(&mut self) -> anyhow::Result<()> {
        let files = self.files()?;
        let mut cache = HashMap::with_capacity(files.len());
        for (file, metadata) in files {
            let entry = self.parsed(&file, &metadata)?;
            cache.insert(file, entry);
        }
        self.cache = cache;
        Ok(())
    }

    /// A file's objects: the cached ones while its stamp is the same, else parsed again.
    fn parsed(&self, file: &Path, metadata: &fs::Metadata) -> anyhow::Result<(FileStamp, Arc<Objects>)> {
        let stamp = FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        };
        if let Some((cached, parsed)) = self.cache.get(file)
            && *cached == stamp
        {
            return Ok((stamp, parsed.clone()));
        }
        let text = fs::read_to_string(file).with_context(|| file.display().to_string())?;
        let mut parsed = Objects::default();
        for object in parse_manifests(&text).with_context(|| file.display().to_string())? {
            parsed.insert(object);
        }
        Ok((stamp, Arc::new(parsed)))
    }

    /// The manifest files, each with its metadata (one `stat` per file, on every read): the
    /// path itself, or the YAML and JSON files of the directory (not hidden, not in
    /// subdirectories), sorted by name.
    fn files(&self) -> anyhow::Result<Vec<(PathBuf, fs::Metadata)>> {
        let metadata = fs::metadata(&self.path).with_context(|| self.path.display().to_string())?;
        if !metadata.is_dir() {
            return Ok(vec![(self.path.clone(), metadata)]);
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.path).with_context(|| self.path.display().to_string())? {
            let path = entry?.path();
            if !is_manifest_name(&path) {
                continue;
            }
            // A file gone since the listing is skipped: the event of its removal brings
            // another read.
            if let Some(metadata) = file_metadata(&path)? {
                files.push((path, metadata));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }
}

/// What a new version of one file changes, kind by kind: the objects it holds, and deletions of
/// those it no longer holds (unless another file holds them too).
struct FileChanges<'a> {
    old: &'a Objects,
    new: &'a Objects,
    files: &'a HashMap<PathBuf, (FileStamp, Arc<Objects>)>,
    updates: &'a mut Vec<Update>,
}

impl KindVisitor for FileChanges<'_> {
    fn visit<K: Kind>(&mut self) {
        for key in K::map(self.old).keys() {
            let elsewhere = self.files.values().any(|(_, parsed)| K::map(parsed).contains_key(key));
            if !elsewhere {
                self.updates.push(Change::<K>::Delete(key.clone()).into());
            }
        }
        for object in K::map(self.new).values() {
            self.updates.push(Change::Apply(object.clone()).into());
        }
    }
}

/// A path's metadata when it is a file (following symlinks, as Kubernetes volume mounts use
/// them); `None` when it is gone or is not a file.
fn file_metadata(path: &Path) -> anyhow::Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(metadata.is_file().then_some(metadata)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Events that may change what the files say (not our own reads).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        _ => true,
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use ostium_model::NamespacedName;

    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn reads_yaml_files_of_a_directory_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
        fs::write(dir.path().join("b.yml"), SERVICE.replace("name: a", "name: b")).unwrap();
        fs::write(dir.path().join(".c.yaml"), "not: [valid").unwrap();
        fs::write(dir.path().join("README.md"), "# not a manifest").unwrap();
        fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let objects = Manifests::new(dir.path().to_owned()).load().unwrap();
        assert_eq!(objects.services.len(), 2);
    }

    #[test]
    fn a_broken_file_fails_the_read_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
        fs::write(dir.path().join("b.yaml"), "kind: [").unwrap();
        let err = Manifests::new(dir.path().to_owned()).load().unwrap_err();
        assert!(format!("{err:#}").contains("b.yaml"), "{err:#}");
    }

    #[test]
    fn a_broken_secret_is_reported_without_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ndata: \"tls.key: -----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n";
        let not_yaml = "apiVersion: v1\nkind: Secret\nstringData: {tls.key: \"-----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n";
        for (file, text) in [("secret.yaml", secret), ("not-yaml.yaml", not_yaml)] {
            fs::write(dir.path().join(file), text).unwrap();
            let err = Manifests::new(dir.path().join(file)).load().unwrap_err();
            for shown in [format!("{err:#}"), format!("{err:?}")] {
                assert!(shown.contains(file) && !shown.contains("SECRETMARKER"), "{shown}");
            }
        }
    }

    #[test]
    fn unchanged_files_are_not_parsed_again_and_changed_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
        fs::write(dir.path().join("b.yaml"), SERVICE.replace("name: a", "name: b")).unwrap();
        let mut manifests = Manifests::new(dir.path().to_owned());
        let first = manifests.load().unwrap();
        // Replace b.yaml by rename, as editors and the benchmarks do.
        fs::write(dir.path().join("tmp"), SERVICE.replace("name: a", "name: c")).unwrap();
        fs::rename(dir.path().join("tmp"), dir.path().join("b.yaml")).unwrap();
        let second = manifests.load().unwrap();

        let a = NamespacedName::new("default", "a");
        assert!(Arc::ptr_eq(&first.services[&a], &second.services[&a]), "a.yaml was parsed again");
        assert!(second.services.contains_key(&NamespacedName::new("default", "c")));
        assert!(!second.services.contains_key(&NamespacedName::new("default", "b")));
    }

    #[test]
    fn after_the_first_snapshot_only_changed_files_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
        fs::write(dir.path().join("b.yaml"), SERVICE.replace("name: a", "name: b")).unwrap();
        let mut manifests = Manifests::new(dir.path().to_owned());
        let first = manifests.read_changes().unwrap();
        assert!(matches!(&first[..], [Update::Snapshot(o)] if o.services.len() == 2), "{first:?}");
        assert!(manifests.read_changes().unwrap().is_empty(), "nothing changed");

        fs::write(dir.path().join("tmp"), SERVICE.replace("name: a", "name: c")).unwrap();
        fs::rename(dir.path().join("tmp"), dir.path().join("b.yaml")).unwrap();
        let changes = manifests.read_changes().unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/b, apply service default/c]");

        fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let changes = manifests.read_changes().unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/a]");
    }

    #[test]
    fn a_change_to_named_files_reads_those_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        fs::write(&a, SERVICE).unwrap();
        fs::write(&b, SERVICE.replace("name: a", "name: b")).unwrap();
        let mut manifests = Manifests::new(dir.path().to_owned());
        manifests.read_changes().unwrap();

        // New lengths: a stamp tells them apart whatever the clock's granularity.
        fs::write(&a, SERVICE.replace("name: a", "name: cc")).unwrap();
        fs::write(&b, SERVICE.replace("name: a", "name: dd")).unwrap();
        let changes = manifests.read_files(std::slice::from_ref(&b)).unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/b, apply service default/dd]");
        // a.yaml was not named: it is read with the next full read.
        let changes = manifests.read_changes().unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/a, apply service default/cc]");

        fs::write(&b, "kind: [").unwrap();
        assert!(manifests.read_files(std::slice::from_ref(&b)).is_err());
        fs::remove_file(&b).unwrap();
        let changes = manifests.read_files(&[b.clone(), b]).unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/dd]", "the failed read changed nothing");
        assert!(manifests.read_changes().unwrap().is_empty(), "the cache is as a full read leaves it");
    }

    #[test]
    fn a_named_file_is_read_with_its_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("release.yaml"), dir.path().join("current.yaml"));
        fs::write(&target, SERVICE).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut manifests = Manifests::new(dir.path().to_owned());
        manifests.read_changes().unwrap();

        fs::write(dir.path().join("tmp"), SERVICE.replace("name: a", "name: b")).unwrap();
        fs::rename(dir.path().join("tmp"), &target).unwrap();
        // As a full read sends them: each name's objects.
        let changes = manifests.read_files(std::slice::from_ref(&target)).unwrap();
        assert_eq!(
            format!("{changes:?}"),
            "[delete service default/a, apply service default/b, delete service default/a, apply service default/b]"
        );
        assert!(manifests.read_changes().unwrap().is_empty(), "the link was read too");
    }

    #[test]
    fn only_events_on_manifest_files_of_the_directory_name_files() {
        let dir = Path::new("/m");
        let event = |paths: &[&str]| {
            let mut event = notify::Event::new(EventKind::Any);
            event.paths = paths.iter().map(PathBuf::from).collect();
            event
        };
        let files = |paths: &[&str]| Some(Read::Files(paths.iter().map(PathBuf::from).collect()));
        let read = |event: notify::Event, dir| Read::after(&Ok(event), dir);
        assert_eq!(read(event(&["/m/a.yaml", "/m/b.json"]), Some(dir)), files(&["/m/a.yaml", "/m/b.json"]));
        for all in [
            &["/m/..data"][..],
            &["/m/.a.yaml.swp"],
            &["/m/a.yaml", "/m/tmp"],
            &["/m"],
            &["/m/sub/a.yaml"],
            &[],
        ] {
            assert_eq!(read(event(all), Some(dir)), Some(Read::All), "{all:?}");
        }
        assert_eq!(read(event(&["/m/a.yaml"]), None), Some(Read::All), "a single-file source");
        // What inotify reports when its queue overflowed.
        let lost = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(read(lost, Some(dir)), Some(Read::All), "events were lost");
        assert_eq!(read(notify::Event::new(EventKind::Other), Some(dir)), None);

        let mut queued = files(&["/m/a.yaml"]).unwrap();
        queued.add(files(&["/m/b.yaml"]).unwrap());
        assert_eq!(Some(queued), files(&["/m/a.yaml", "/m/b.yaml"]));
        let mut queued = files(&["/m/a.yaml"]).unwrap();
        queued.add(Read::All);
        assert_eq!(queued, Read::All);
    }

    #[test]
    fn a_broken_file_sends_nothing_and_its_fix_sends_the_change() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
        let mut manifests = Manifests::new(dir.path().to_owned());
        manifests.read_changes().unwrap();
        fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
        assert!(manifests.read_changes().is_err());
        fs::write(dir.path().join("a.yaml"), SERVICE.replace("name: a", "name: d")).unwrap();
        let changes = manifests.read_changes().unwrap();
        assert_eq!(format!("{changes:?}"), "[delete service default/a, apply service default/d]");
    }

    #[test]
    fn a_single_file_can_be_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.yaml");
        fs::write(&file, SERVICE).unwrap();
        assert_eq!(Manifests::new(file).load().unwrap().services.len(), 1);
    }
}
