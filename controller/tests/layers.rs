//! The controller's layers, checked by reading the imports: the arrows run
//! one way (ARCHITECTURE.md, "Controller layers").
//!
//! `state` (replicated records and their apply code) and `policy`
//! (decisions) are pure: they import nothing from the replica, Raft, the
//! leader's loops or the API. The leader's loops import nothing from the
//! API. `kube` (Kubernetes building blocks) imports nothing of the rest.
//! Test modules (`#[cfg(test)]` to the end of a file) may reach further.

use std::path::{Path, PathBuf};

/// Folders (under `controller/src`) and the crate paths their production
/// code must not name.
const RULES: &[(&str, &[&str])] = &[
    (
        "state",
        &[
            "crate::api",
            "crate::leader",
            "crate::policy",
            "crate::replica",
            "crate::raft",
        ],
    ),
    (
        "policy",
        &["crate::api", "crate::leader", "crate::replica", "crate::raft"],
    ),
    ("leader", &["crate::api"]),
    (
        "kube",
        &[
            "crate::api",
            "crate::leader",
            "crate::policy",
            "crate::replica",
            "crate::raft",
            "crate::state",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a source file: up to its test module, without
/// comments (doc links may name any layer).
fn production_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files that exist only for tests (declared `#[cfg(test)] mod x;`).
fn test_only(path: &Path) -> bool {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name == "testing" || name == "tests" || name.ends_with("_tests")
}

#[test]
fn pure_layers_do_not_import_the_layers_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for (folder, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "controller/src/{folder} has no Rust files");
        for file in files.iter().filter(|f| !test_only(f)) {
            let code = production_code(&std::fs::read_to_string(file).unwrap());
            checked += 1;
            for path in *forbidden {
                for (n, line) in code.lines().enumerate() {
                    if line.contains(path) {
                        violations.push(format!(
                            "{}:{}: {folder} must not use {path}: {}",
                            file.strip_prefix(&src).unwrap().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_notices_a_violation() {
    let code = production_code(
        "use crate::api::status;\n// crate::leader in a comment\n#[cfg(test)]\nmod tests {\n use crate::leader;\n}\n",
    );
    assert!(code.contains("crate::api"));
    assert!(
        !code.contains("crate::leader"),
        "comments and the test module are skipped"
    );
}
