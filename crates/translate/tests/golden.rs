//! Golden tests: each `fixtures/<case>/input.yaml` (a real multi-document manifest, plus an
//! optional `flags` file with one controller flag per line) is translated, rendered, and
//! compared with `expected.txt`. Every case is also run with its documents shuffled and must
//! render the same. `OSTIUM_BLESS=1 cargo test -p ostium-translate --test golden` rewrites the
//! expectations; review the diff like code.

use std::path::{Path, PathBuf};

use ostium_translate::{Objects, parse_manifests, translate};
use support::options;

mod support;

#[test]
fn golden_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing under {}", root.display());
    let bless = std::env::var_os("OSTIUM_BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = run_case(case, bless) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn run_case(case: &Path, bless: bool) -> Result<(), String> {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let input =
        std::fs::read_to_string(case.join("input.yaml")).map_err(|e| format!("{name}: input.yaml: {e}"))?;
    let flags = std::fs::read_to_string(case.join("flags")).unwrap_or_default();
    let options = options(&flags);

    let documents = parse_manifests(&input).map_err(|e| format!("{name}: {e}"))?;
    let render = |docs: &[ostium_translate::Object]| {
        let mut objects = Objects::default();
        for doc in docs {
            objects.insert(doc.clone());
        }
        translate(&objects, &options).render()
    };
    let actual = render(&documents);

    // Shuffled input must give the same output.
    for seed in 1..=5u64 {
        let mut shuffled = documents.clone();
        shuffle(&mut shuffled, seed);
        if render(&shuffled) != actual {
            return Err(format!("{name}: output depends on input order (seed {seed})"));
        }
    }

    let expected_path = case.join("expected.txt");
    if bless {
        std::fs::write(&expected_path, &actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if expected != actual {
        return Err(format!("{name}: rendering differs\n--- expected\n{expected}--- actual\n{actual}"));
    }
    Ok(())
}

/// Fisher-Yates with a small deterministic generator (xorshift64).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}
