//! Fuzzing of YAML manifest loading: arbitrary text, YAML token soup, and mutations of real
//! multi-document fixtures go through `parse_manifests`; what loads is translated and rendered.
//! Errors are fine; panics are not.
//!
//! `OSTIUM_FUZZ_SECONDS=600 cargo test --release -p ostium-translate --test fuzz_manifests
//! -- --nocapture` runs it for ten minutes (see docs/fuzzing.md).

use std::sync::{Arc, OnceLock};

use ostium_test_support::fuzz;
use ostium_translate::{Objects, Options, parse_manifests, translate};
use proptest::prelude::*;
use proptest::sample::select;

const FIXTURES: &[&str] = &[
    include_str!("fixtures/annotations-basic-auth-fails-closed/input.yaml"),
    include_str!("fixtures/annotations-regex-paths-and-rewrites/input.yaml"),
    include_str!("fixtures/endpoint-slices-ready-terminating-merged-and-deduplicated/input.yaml"),
    include_str!("fixtures/tls-certificates-from-secrets/input.yaml"),
];

/// Pieces of YAML and of Kubernetes objects.
const TOKENS: &[&str] = &[
    "---\n",
    "...\n",
    "\n",
    "\n",
    ": ",
    "- ",
    "  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "!Custom ",
    "'",
    "\"",
    "\\",
    "#",
    "|\n",
    ">-\n",
    "? ",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
    "apiVersion",
    "kind",
    "v1",
    "List",
    "items",
    "Ingress",
    "networking.k8s.io/v1",
    "discovery.k8s.io/v1",
    "EndpointSlice",
    "Secret",
    "Service",
    "IngressClass",
    "metadata",
    "name",
    "namespace",
    "spec",
    "rules",
    "paths",
    "path",
    "pathType",
    "backend",
    "port",
    "number",
    "data",
    "stringData",
    "annotations",
    "null",
    "~",
    "0",
    "-1",
    "1e400",
    "0x10",
    "65536",
    "true",
    "é",
    "\u{feff}",
    "\0",
    "\r",
    "x",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Removes up to this many bytes (whole characters) at a position.
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    DeleteLine(usize),
    SwapLines(usize, usize),
    /// Replaces what follows the first `: ` of a line (a value, mostly).
    ReplaceValue(usize, String),
    Truncate(usize),
}

#[derive(Clone, Debug)]
enum Input {
    Text(String),
    Tokens(String),
    Mutated(usize, Vec<Mutation>),
}

fn tokens() -> impl Strategy<Value = String> {
    prop::collection::vec(select(TOKENS), 0..60).prop_map(|t| t.concat())
}

/// A scalar: a token, a quoted random string, or a flow value.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(TOKENS).prop_map(str::to_owned),
        any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
        select(
            &["\"\"", "[]", "{}", "[1, 2]", "{a: b}", "-5", "80", "http", "/", "/a(", "*.example.com"][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        4 => (at, value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        2 => at.prop_map(Mutation::DeleteLine),
        2 => at.prop_map(Mutation::DuplicateLine),
        1 => (at, at).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => (at, 1..20usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (at, prop_oneof![3 => tokens(), 1 => any::<String>()]).prop_map(|(at, s)| Mutation::Insert(at, s)),
        1 => at.prop_map(Mutation::Truncate),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => any::<String>().prop_map(Input::Text),
        2 => tokens().prop_map(Input::Tokens),
        5 => (0..FIXTURES.len(), prop::collection::vec(mutation(), 1..4)).prop_map(|(i, m)| Input::Mutated(i, m)),
    ]
}

/// The character boundary at or before `at` (taken modulo the length plus one).
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, mutation: &Mutation) {
    match mutation {
        Mutation::Delete(at, n) => {
            let start = boundary(text, *at);
            let end = boundary(text, (start + n).min(text.len()));
            text.replace_range(start..end, "");
        }
        Mutation::Insert(at, s) => {
            let at = boundary(text, *at);
            text.insert_str(at, s);
        }
        Mutation::DuplicateLine(i)
        | Mutation::DeleteLine(i)
        | Mutation::SwapLines(i, _)
        | Mutation::ReplaceValue(i, _) => {
            let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
            if lines.is_empty() {
                return;
            }
            let count = lines.len();
            let i = i % count;
            match mutation {
                Mutation::SwapLines(_, j) => lines.swap(i, j % count),
                Mutation::DeleteLine(_) => drop(lines.remove(i)),
                Mutation::ReplaceValue(_, value) => {
                    if let Some(colon) = lines[i].find(": ") {
                        lines[i].replace_range(colon + 2.., value);
                        lines[i].push('\n');
                    }
                }
                _ => lines.insert(i, lines[i].clone()),
            }
            *text = lines.concat();
        }
        Mutation::Truncate(at) => {
            let at = boundary(text, *at);
            text.truncate(at);
        }
    }
}

fn text(input: &Input) -> String {
    match input {
        Input::Text(text) | Input::Tokens(text) => text.clone(),
        Input::Mutated(i, mutations) => {
            let mut text = FIXTURES[*i].to_owned();
            for mutation in mutations {
                apply(&mut text, mutation);
            }
            text
        }
    }
}

fn options() -> Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS
        .get_or_init(|| {
            let fallback = ostium_test_support::fallback_certificate();
            Options::new(fallback, Arc::new(rustls::crypto::ring::default_provider()))
        })
        .clone()
}

#[test]
fn fuzz_manifests() {
    fuzz::run("fuzz_manifests", 1000, input(), |input| {
        let text = text(&input);
        if let Ok(documents) = parse_manifests(&text) {
            let mut objects = Objects::default();
            for document in documents {
                objects.insert(document);
            }
            let translation = translate(&objects, &options());
            let _ = translation.render();
            let _ = translation.explain("foo.example.com", "/", true);
        }
        Ok(())
    });
}
