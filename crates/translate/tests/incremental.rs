//! Incremental translation gives what translating everything gives: for every golden fixture
//! and every object in it, adding the object to the rest (and taking it away again) through
//! [`Incremental::update`] must make the table and the diagnostics that [`translate`] makes of
//! the same objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ostium_model::NamespacedName;
use ostium_translate::{
    Incremental, Kind, KindVisitor, ObjectKind, Objects, Options, Reference, for_each_kind, parse_manifests,
    translate,
};
use support::options;

mod support;

#[test]
fn adding_or_removing_any_object_of_any_fixture_translates_as_everything_would() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing under {}", root.display());
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let options = options(&std::fs::read_to_string(case.join("flags")).unwrap_or_default());
        let Ok(documents) = parse_manifests(&input) else { continue };
        let all = objects(documents.iter());
        for skipped in 0..documents.len() {
            let rest = objects(documents.iter().enumerate().filter(|(i, _)| *i != skipped).map(|(_, d)| d));
            let changed = differences(&rest, &all);
            // A repeated document (same kind and name) changes no key: nothing to judge by.
            if changed.is_empty() || changed.iter().any(|r| is_endpoints(r.kind)) {
                continue;
            }
            let mut incremental = Incremental::new();
            incremental.rebuild(&rest, &options);
            let added = compare(&mut incremental, &all, &options, &changed);
            let removed = compare(&mut incremental, &rest, &options, &changed);
            for (what, result) in [("adding", added), ("removing", removed)] {
                if let Err(e) = result {
                    failures.push(format!("{name}: {what} document {skipped} ({changed:?}): {e}"));
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} changes checked");
    assert!(failures.is_empty(), "{} of {checked} changes differ:\n{}", failures.len(), failures.join("\n"));
}

/// Updates `incremental` to `objects` after a change to `changed`, and compares with
/// translating everything.
fn compare(
    incremental: &mut Incremental,
    objects: &Objects,
    options: &Options,
    changed: &BTreeSet<Reference>,
) -> Result<(), String> {
    let built = incremental.update(objects, options, changed);
    let full = translate(objects, options);
    if *built.table != full.table {
        let partial = ostium_translate::Translation {
            table: ostium_model::Table::clone(&built.table),
            diagnostics: Vec::new(),
            ingresses: Vec::new(),
        };
        let full = ostium_translate::Translation { diagnostics: Vec::new(), ..full };
        return Err(format!(
            "tables differ\n--- full\n{}--- incremental\n{}",
            full.render(),
            partial.render()
        ));
    }
    let rendered = |d: Vec<ostium_translate::Diagnostic>| {
        let mut all: Vec<String> = d.iter().map(ToString::to_string).collect();
        all.sort();
        all
    };
    let (want, got) = (rendered(full.diagnostics), rendered(incremental.diagnostics()));
    if want != got {
        return Err(format!("diagnostics differ\n--- full\n{want:#?}\n--- incremental\n{got:#?}"));
    }
    if incremental.served() != full.ingresses {
        return Err(format!("served {:?}, not {:?}", incremental.served(), full.ingresses));
    }
    Ok(())
}

fn is_endpoints(kind: ObjectKind) -> bool {
    matches!(kind, ObjectKind::EndpointSlice | ObjectKind::Endpoints)
}

fn objects<'a>(documents: impl Iterator<Item = &'a ostium_translate::Object>) -> Objects {
    let mut objects = Objects::default();
    for document in documents {
        objects.insert(document.clone());
    }
    objects
}

/// The objects one snapshot has and the other has not.
fn differences(a: &Objects, b: &Objects) -> BTreeSet<Reference> {
    struct Diff<'a>(&'a Objects, &'a Objects, BTreeSet<Reference>);
    impl KindVisitor for Diff<'_> {
        fn visit<K: Kind>(&mut self) {
            let keys = |o: &Objects| -> BTreeSet<NamespacedName> { K::map(o).keys().cloned().collect() };
            for key in keys(self.0).symmetric_difference(&keys(self.1)) {
                self.2.insert(Reference::new(K::OBJECT_KIND, key));
            }
        }
    }
    let mut diff = Diff(a, b, BTreeSet::new());
    for_each_kind(&mut diff);
    diff.2
}
