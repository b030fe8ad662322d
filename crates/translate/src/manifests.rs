//! Manifests: YAML streams (standalone `--manifests` mode and test fixtures) read into the
//! objects ostium reads.
//!
//! Each document goes straight into the type of its kind, without a generic tree in between:
//! the top-level keys are read until `apiVersion`, `kind` and `metadata` are known (they
//! usually come first; any before them are kept as JSON values), and the rest of the document
//! is handed to that kind's deserializer.
//!
//! Keys given twice are refused at the top level of an object of a kind ostium reads; below it
//! the last one wins, as in the API server's JSON decoding (the expanding parser, for streams
//! with anchors, refuses them anywhere).
//!
//! A scalar where a string is expected (`ssl-redirect: false` unquoted) is read as that string,
//! as libyaml gives it, where the key stands after `apiVersion`, `kind` and `metadata`; keys
//! before them are held as JSON values, which keep the scalar's type and refuse it (as the API
//! server does in every case).

use k8s_openapi::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::kind::{self, Kind, KindVisitor, for_each_kind};
use crate::objects::Object;

/// A manifest that cannot be loaded: a YAML syntax error, or a document of a kind ostium reads
/// that does not have that kind's shape. The message says where and what kind of problem, never
/// the text of the document: that may be Secret data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("document {document}: {error}")]
pub struct ManifestError {
    /// 1-based position of the document in the file (0 when the YAML itself does not parse).
    pub document: usize,
    pub error: DocumentError,
}

/// What is wrong with a manifest document. Nothing here quotes a value of the document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Position and a fixed description only.
    #[error("{0}")]
    Yaml(String),
    #[error("not a Kubernetes object: `apiVersion` and `kind` are required")]
    NotAnObject,
    #[error("v1 List without `items`")]
    ListWithoutItems,
    #[error("{kind} `{name}`: unsupported apiVersion `{api_version}`")]
    UnsupportedApiVersion { kind: String, name: String, api_version: String },
    /// `reason` is the structural part of the deserializer's message.
    #[error("{api_version} {kind} `{name}`: {reason}")]
    Malformed { api_version: String, kind: String, name: String, reason: String },
    #[error("{kind}: `metadata.name` is required")]
    MissingName { kind: String },
    #[error("a key appears twice in one mapping")]
    DuplicateKey,
    #[error("not one object of a kind ostium reads")]
    NotOneObject,
}

/// Parses a YAML stream (one or more `---`-separated documents, `kind: List` included) into the
/// objects ostium reads. Documents of other kinds (Deployments, Pods …) are skipped, so a
/// whole application's manifests can be pointed at. Any error fails the whole stream: a
/// half-read file must not replace a good one.
///
/// Nesting deeper than 128 is an error. A stream with anchors (`&`) or merge keys (`<<`) is read
/// by a slower parser that bounds what their expansion costs (YAML bombs), and then read like
/// the API server's JSON: libyaml's bound is on the number of alias jumps, not on the work they
/// replay, and it leaves merge keys to the reader.
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    if text.contains('&') || text.contains("<<") {
        return parse_expanding(text);
    }
    let mut objects = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        if let Err(failure) = read_document(document, i + 1, &mut objects) {
            // A syntax error can strike in the middle of an object, where it looks like any other
            // error of that object's deserializer: the stream is read again for it alone.
            return Err(syntax_error(text).unwrap_or(failure));
        }
    }
    Ok(objects)
}

/// Reads a stream with anchors or merge keys: expanded into JSON values within a budget, then
/// read one by one.
fn parse_expanding(text: &str) -> Result<Vec<Object>, ManifestError> {
    // The default budget stops at 1 024 documents and 250 000 nodes, which a fleet's worth of
    // Ingresses in one file passes. Alias expansion keeps its default limits.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 100_000_000,
        },
        with_snippet: false,
    };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| ManifestError { document: 0, error: DocumentError::Yaml(expansion_error(&e)) })?;
    let mut objects = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        read_document(document, i + 1, &mut objects)?;
    }
    Ok(objects)
}

/// Reads one document, from YAML or from its JSON form, adding its objects to `out`.
pub(crate) fn read_document<'de, D: Deserializer<'de>>(
    document: D,
    number: usize,
    out: &mut Vec<Object>,
) -> Result<(), ManifestError> {
    let mut reading = Reading::default();
    let seed = DocumentSeed { out, reading: &mut reading };
    match seed.deserialize(document) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ManifestError { document: number, error }),
        Err(e) => Err(ManifestError { document: number, error: shape_failure(&e.to_string(), reading) }),
    }
}

const TOO_LARGE: &str = "too large or too deeply nested";

/// The object being read when a document failed, to name it in the error.
#[derive(Default)]
struct Reading {
    api_version: String,
    kind: String,
    name: String,
}

/// Reads a document: nothing, one object, or a `v1 List` of them.
struct DocumentSeed<'a> {
    out: &'a mut Vec<Object>,
    reading: &'a mut Reading,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Result<(), DocumentError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Result<(), DocumentError>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    /// An empty document.
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        *self.reading = Reading::default();
        // The entries until `apiVersion`, `kind` and `metadata` are known, kept to be read once
        // they are (with the metadata first, to name the object whatever else is wrong). The
        // metadata of a kind ostium reads, when it comes after them as usual, is read at once.
        let mut early: Vec<(String, Value)> = Vec::new();
        let mut metadata: Option<ObjectMeta> = None;
        let has = |early: &[(String, Value)], key: &str| early.iter().any(|(k, _)| k == key);
        while !(has(&early, "apiVersion")
            && has(&early, "kind")
            && (metadata.is_some() || has(&early, "metadata")))
        {
            let Some(key) = map.next_key::<String>()? else { break };
            if has(&early, &key) {
                map.next_value::<IgnoredAny>()?;
                drain(map)?;
                return Ok(Err(DocumentError::DuplicateKey));
            }
            if key == "metadata"
                && let Some((api_version, kind)) = header(&early).filter(|(v, k)| reads(v, k))
            {
                (self.reading.api_version, self.reading.kind) = (api_version.to_owned(), kind.to_owned());
                let read = map.next_value_seed(MetadataSeed)?;
                self.reading.name = read.name.clone().unwrap_or_default();
                metadata = Some(read);
                continue;
            }
            early.push((key, map.next_value()?));
        }
        let Some((api_version, kind)) = header(&early) else {
            drain(map)?;
            return Ok(Err(DocumentError::NotAnObject));
        };
        let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
        if (api_version.as_str(), kind.as_str()) == ("v1", "List") {
            return read_list(early, map, self.out, self.reading);
        }
        let mut read = ReadKind {
            api_version: &api_version,
            kind: &kind,
            input: Some(Body { early, metadata, map }),
            out: self.out,
            reading: self.reading,
            other_version: false,
            result: None,
        };
        for_each_kind(&mut read);
        let Some(Body { early, map, .. }) = read.input else {
            return read.result.expect("the kind that took the input sets a result");
        };
        // A kind ostium does not read (skipped), or one it reads in another version.
        let other_version = read.other_version;
        let name = drain_for_name(early, map)?;
        Ok(if other_version {
            Err(DocumentError::UnsupportedApiVersion { kind, name, api_version })
        } else {
            Ok(())
        })
    }
}

/// A document's map once its kind is known: the entries read before, its metadata when it was
/// read on the way, and the rest.
struct Body<A> {
    early: Vec<(String, Value)>,
    metadata: Option<ObjectMeta>,
    map: A,
}

/// Reads the rest of the map of the kind it names, when ostium reads that kind in that
/// `apiVersion`.
struct ReadKind<'a, 'de, A: MapAccess<'de>> {
    api_version: &'a str,
    kind: &'a str,
    input: Option<Body<A>>,
    out: &'a mut Vec<Object>,
    reading: &'a mut Reading,
    other_version: bool,
    result: Option<Result<Result<(), DocumentError>, A::Error>>,
}

impl<'de, A: MapAccess<'de>> KindVisitor for ReadKind<'_, 'de, A> {
    fn visit<K: Kind>(&mut self) {
        if self.kind != <K as Resource>::KIND {
            return;
        }
        if self.api_version != K::API_VERSION {
            self.other_version = true;
            return;
        }
        let Some(Body { early, metadata, map }) = self.input.take() else { return };
        self.reading.api_version = K::API_VERSION.to_owned();
        self.reading.kind = self.kind.to_owned();
        self.result = Some(read_object::<K, A>(early, metadata, map, self.out, self.reading));
    }
}

/// Reads an object of kind `K`: its metadata first (so that it names the object even when the
/// rest is malformed), the rest by `K`'s deserializer.
fn read_object<'de, K: Kind, A: MapAccess<'de>>(
    mut early: Vec<(String, Value)>,
    metadata: Option<ObjectMeta>,
    map: A,
    out: &mut Vec<Object>,
    reading: &mut Reading,
) -> Result<Result<(), DocumentError>, A::Error> {
    let metadata = match (metadata, early.iter().position(|(key, _)| key == "metadata")) {
        (Some(metadata), _) => metadata,
        (None, Some(at)) => MetadataSeed.deserialize(early.remove(at).1).map_err(de::Error::custom)?,
        (None, None) => ObjectMeta::default(),
    };
    reading.name = metadata.name.clone().unwrap_or_default();
    // `metadata` is among the keys seen whether it was given or not: the entries before
    // `apiVersion`, `kind` and `metadata` are known are all read by now.
    let keys = early.iter().map(|(key, _)| key.clone()).chain(["metadata".to_owned()]).collect();
    let mut rest = Rest { early: early.into_iter(), map, keys, value: None, duplicate: false };
    let object = K::deserialize(MapAccessDeserializer::new(&mut rest))?;
    if rest.duplicate {
        return Ok(Err(DocumentError::DuplicateKey));
    }
    let object = kind::complete(object, metadata);
    if object.metadata().name.as_deref().unwrap_or("").is_empty() {
        return Ok(Err(DocumentError::MissingName { kind: reading.kind.clone() }));
    }
    out.push(Object::new(object));
    Ok(Ok(()))
}

/// The entries of a document but its metadata: those read before its kind was known, then those
/// still to come.
struct Rest<A> {
    early: std::vec::IntoIter<(String, Value)>,
    map: A,
    /// The keys seen, to refuse one given twice.
    keys: Vec<String>,
    /// The value of an early key handed out, to hand out next.
    value: Option<Value>,
    duplicate: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut Rest<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        loop {
            let key = match self.early.next() {
                Some((key, value)) => {
                    self.value = Some(value);
                    key
                }
                None => match self.map.next_key::<String>()? {
                    None => return Ok(None),
                    Some(key) if self.keys.contains(&key) => {
                        // The object is refused; its reading goes on to the end of the map.
                        self.duplicate = true;
                        self.map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    Some(key) => {
                        self.keys.push(key.clone());
                        key
                    }
                },
            };
            return seed.deserialize(StringDeserializer::new(key)).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value).map_err(de::Error::custom),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// The `apiVersion` and `kind` of a document, once both are read.
fn header(early: &[(String, Value)]) -> Option<(&str, &str)> {
    let field = |key: &str| early.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_str());
    Some((field("apiVersion")?, field("kind")?))
}

/// Whether ostium reads objects of this kind and version.
fn reads(api_version: &str, kind: &str) -> bool {
    struct Reads<'a>(&'a str, &'a str, bool);
    impl KindVisitor for Reads<'_> {
        fn visit<K: Kind>(&mut self) {
            self.2 |= (self.0, self.1) == (K::API_VERSION, <K as Resource>::KIND);
        }
    }
    let mut reads = Reads(api_version, kind, false);
    for_each_kind(&mut reads);
    reads.2
}

/// Reads an object's metadata, skipping `managedFields` unread: often the largest part of an
/// object written by `kubectl get -o yaml`, and nothing here needs it.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = ObjectMeta;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ObjectMeta, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = ObjectMeta;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("object metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ObjectMeta, A::Error> {
        let metadata = ObjectMeta::deserialize(MapAccessDeserializer::new(WithoutManagedFields(map)))?;
        Ok(kind::strip_metadata(metadata))
    }
}

/// A metadata map without its `managedFields` entry.
struct WithoutManagedFields<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutManagedFields<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<String>()? {
            if key != "managedFields" {
                return seed.deserialize(StringDeserializer::new(key)).map(Some);
            }
            self.0.next_value::<IgnoredAny>()?;
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// A `v1 List`: each of its `items` is read as a document.
fn read_list<'de, A: MapAccess<'de>>(
    early: Vec<(String, Value)>,
    mut map: A,
    out: &mut Vec<Object>,
    reading: &mut Reading,
) -> Result<Result<(), DocumentError>, A::Error> {
    *reading = Reading { api_version: "v1".to_owned(), kind: "List".to_owned(), name: String::new() };
    let mut read = None;
    for (key, value) in early {
        if key == "items" {
            read = Some(
                Items { out: &mut *out, reading: &mut *reading }
                    .deserialize(value)
                    .map_err(de::Error::custom)?,
            );
        }
    }
    while let Some(key) = map.next_key::<String>()? {
        if key != "items" {
            map.next_value::<IgnoredAny>()?;
        } else if read.is_some() {
            map.next_value::<IgnoredAny>()?;
            read = Some(Err(DocumentError::DuplicateKey));
        } else {
            read = Some(map.next_value_seed(Items { out: &mut *out, reading: &mut *reading })?);
        }
    }
    Ok(read.unwrap_or(Err(DocumentError::ListWithoutItems)))
}

/// The `items` of a `v1 List`.
struct Items<'a> {
    out: &'a mut Vec<Object>,
    reading: &'a mut Reading,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Result<(), DocumentError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Result<(), DocumentError>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut items: S) -> Result<Self::Value, S::Error> {
        while let Some(item) =
            items.next_element_seed(DocumentSeed { out: &mut *self.out, reading: &mut *self.reading })?
        {
            if let Err(error) = item {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Err(error));
            }
        }
        Ok(Ok(()))
    }
}

/// Reads the rest of a map that is not kept.
fn drain<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads the rest of a map that is not kept, for the name of the object it is.
fn drain_for_name<'de, A: MapAccess<'de>>(
    early: Vec<(String, Value)>,
    mut map: A,
) -> Result<String, A::Error> {
    let name_of = |metadata: &Value| metadata.get("name").and_then(Value::as_str).map(str::to_owned);
    let mut name = early.iter().find(|(k, _)| k == "metadata").and_then(|(_, m)| name_of(m));
    while let Some(key) = map.next_key::<String>()? {
        if key == "metadata" {
            name = name_of(&map.next_value::<Value>()?);
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(name.unwrap_or_default())
}

/// The error of a document that has the wrong shape, from the deserializer's message: it names
/// the object and keeps only the structure of the message (see [`kind::shape_error`]).
fn shape_failure(message: &str, reading: Reading) -> DocumentError {
    if message.contains("recursion limit exceeded") || message.contains("repetition limit exceeded") {
        return DocumentError::Yaml(format!("invalid YAML: {TOO_LARGE}"));
    }
    if reading.kind.is_empty() {
        return DocumentError::NotAnObject;
    }
    let reason = kind::shape_error(message);
    let Reading { api_version, kind, name } = reading;
    DocumentError::Malformed { api_version, kind, name, reason }
}

/// The first YAML syntax error of a stream, told by position and a fixed description: the
/// parser's messages quote nothing, but keep to what is known.
fn syntax_error(text: &str) -> Option<ManifestError> {
    let error = serde_norway::Deserializer::from_str(text).find_map(|d| IgnoredAny::deserialize(d).err())?;
    let message = error.to_string();
    let what =
        if message.contains("recursion limit exceeded") || message.contains("repetition limit exceeded") {
            "too large or too deeply nested"
        } else if message.contains("unknown anchor") {
            "an alias names an unknown anchor"
        } else if message.contains("end of stream") || message.contains("EOF") {
            "unexpected end of input"
        } else {
            "syntax error"
        };
    let error = match error.location() {
        Some(at) => format!("invalid YAML at line {}, column {}: {what}", at.line(), at.column()),
        None => format!("invalid YAML: {what}"),
    };
    Some(ManifestError { document: 0, error: DocumentError::Yaml(error) })
}

/// A syntax error of the expanding parser, by position and kind only: its message and snippet
/// may quote the document.
fn expansion_error(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    let mut error = error;
    while let Error::AliasError { error: inner, .. } | Error::WithSnippet { error: inner, .. } = error {
        error = inner;
    }
    let what = match error {
        Error::Eof { .. } => "unexpected end of input",
        Error::InvalidUtf8Input => "not UTF-8",
        Error::DuplicateMappingKey { .. } => "a key appears twice in one mapping",
        Error::UnknownAnchor { .. } => "an alias names an unknown anchor",
        Error::Budget { .. }
        | Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => TOO_LARGE,
        _ => "syntax error",
    };
    match error.location() {
        Some(at) => format!("invalid YAML at line {}, column {}: {what}", at.line(), at.column()),
        None => format!("invalid YAML: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Objects;

    #[test]
    fn keys_in_any_order_are_read() {
        // `kubectl get -o yaml` writes keys in alphabetical order: `metadata` after `data`.
        let yaml = "data: {auth: dXNlcjpoYXNo}\nkind: Secret\nmetadata: {name: s, namespace: x}\napiVersion: v1\ntype: Opaque\n";
        let objects = parse_manifests(yaml).unwrap();
        assert_eq!(format!("{objects:?}"), "[Secret x/s]");
    }

    #[test]
    fn a_key_given_twice_refuses_the_document() {
        for yaml in [
            "apiVersion: v1\nkind: Service\nkind: Service\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\nmetadata: {name: b}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\nspec: {}\n",
            "apiVersion: v1\nkind: List\nitems: []\nitems: [{apiVersion: v1, kind: Service, metadata: {name: a}}]\n",
        ] {
            let err = parse_manifests(yaml).unwrap_err();
            assert_eq!(err, ManifestError { document: 1, error: DocumentError::DuplicateKey }, "{yaml}");
        }
    }

    #[test]
    fn a_malformed_object_is_named_when_its_metadata_came_first() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: 80}\n";
        let err = parse_manifests(yaml).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1: v1 Service `web`: invalid type: integer, expected a sequence"
        );
    }

    /// Asserts that neither the Display nor the Debug form of an error quotes the marker.
    fn assert_redacted(err: &ManifestError) {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("SECRETMARKER"), "{shown}");
        }
    }

    #[test]
    fn values_that_look_like_messages_are_not_quoted() {
        for yaml in [
            // Before `kind`: read as JSON first, and the error has no position.
            "data: \"x, expected SECRETMARKER at line 9\"\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: \"x, expected SECRETMARKER at line 9 column 1\"\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {\"missing field `SECRETMARKER`\": \"!!!\"}\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {\"a\": \"invalid type: integer `5`, expected SECRETMARKER\"}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: \"invalid value: string \\\"a\\\", expected SECRETMARKER\"}]}\n",
        ] {
            let err = parse_manifests(yaml).unwrap_err();
            assert_redacted(&err);
            assert!(matches!(err.error, DocumentError::Malformed { ref name, .. } if name == "s"), "{err}");
        }
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": "a, expected SECRETMARKER at line 1",
        });
        let err = Object::from_value(value).unwrap_err();
        assert_eq!(err.to_string(), "v1 Secret `s`: invalid type: string, expected a map");
    }

    #[test]
    fn objects_of_a_list_are_named_by_their_own_metadata() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: first}}\n- {apiVersion: v1, kind: Secret, data: [x], metadata: {name: second}}\n";
        let err = parse_manifests(yaml).unwrap_err();
        assert_eq!(err.to_string(), "document 1: v1 Secret `second`: invalid type: sequence, expected a map");
    }

    #[test]
    fn anchors_and_merge_keys_are_expanded_within_a_budget() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: &m {name: web, namespace: x}\nspec:\n  <<: {type: ClusterIP}\n  ports: [{port: 80}]\n";
        let objects = Objects::from_yaml(yaml).unwrap();
        let service = &objects.services[&ostium_model::NamespacedName::new("x", "web")];
        assert_eq!(service.spec.as_ref().unwrap().type_.as_deref(), Some("ClusterIP"));
        // Each alias replays the whole anchor: 3 000 × 3 000 values from 15 KB.
        let items = vec!["1"; 3000].join(",");
        let aliases = vec!["*a"; 3000].join(",");
        let bomb =
            format!("x: &a [{items}]\ny: [{aliases}]\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n");
        let err = parse_manifests(&bomb).unwrap_err();
        assert!(err.to_string().contains(TOO_LARGE), "{err}");
    }

    #[test]
    fn nesting_too_deep_is_a_yaml_error() {
        let yaml = format!(
            "x: {}{}\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let err = parse_manifests(&yaml).unwrap_err();
        assert!(err.to_string().contains(TOO_LARGE), "{err}");
    }

    #[test]
    fn managed_fields_are_skipped_unread() {
        let metadata = "metadata: {name: c, managedFields: [{time: notatime, fieldsV1: {f:data: {}}}]}\n";
        for yaml in [
            format!("apiVersion: v1\nkind: ConfigMap\n{metadata}data: {{a: b}}\n"),
            format!("{metadata}apiVersion: v1\nkind: ConfigMap\ndata: {{a: b}}\n"),
        ] {
            let objects = Objects::from_yaml(&yaml).unwrap();
            let config_map = &objects.config_maps[&ostium_model::NamespacedName::new("default", "c")];
            assert!(config_map.metadata.managed_fields.is_none());
        }
    }

    #[test]
    fn an_unquoted_scalar_in_a_string_field_is_read_as_written() {
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i\n  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: false}\n";
        let objects = Objects::from_yaml(yaml).unwrap();
        let ingress = &objects.ingresses[&ostium_model::NamespacedName::new("default", "i")];
        assert_eq!(
            ingress.metadata.annotations.as_ref().unwrap()["nginx.ingress.kubernetes.io/ssl-redirect"],
            "false"
        );
    }
}
