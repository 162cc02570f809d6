//! The house rules as tests (after rust-analyzer's `xtask/src/tidy.rs`): each rule is a pure
//! function from the tree's text to the list of what breaks it, run against the real tree (it
//! must find nothing) and against a made-up breach (it must find it), so a rule that could not
//! fail is itself a failing test.
//!
//! - every workspace crate's `lib.rs` (or `main.rs`) opens with `//!` saying its job, and that
//!   block says what it must never do;
//! - `ARCHITECTURE.md` names every workspace member;
//! - every `docs/…` path named in the code exists;
//! - the fuzz targets CI runs are exactly the files in `fuzz/fuzz_targets/` and the `[[bin]]`s
//!   of `fuzz/Cargo.toml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The `members = [...]` of a workspace manifest, in order.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members = [") else { return Vec::new() };
    let rest = &manifest[start + "members = [".len()..];
    let list = rest.split(']').next().unwrap_or("");
    list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect()
}

/// The crate root whose `//!` block documents the crate: `src/lib.rs`, else `src/main.rs`.
fn crate_root(member: &Path) -> PathBuf {
    let lib = member.join("src/lib.rs");
    if lib.exists() { lib } else { member.join("src/main.rs") }
}

/// What is wrong with a crate root's module documentation: it must open the file and say what
/// the crate must never do.
fn crate_doc_problems(name: &str, source: &str) -> Vec<String> {
    let doc: Vec<&str> = source.lines().take_while(|l| l.starts_with("//!")).collect();
    if doc.is_empty() {
        return vec![format!("{name}: does not open with a `//!` block saying its job")];
    }
    if !doc.iter().any(|l| l.to_lowercase().contains("must never")) {
        return vec![format!("{name}: its `//!` block does not say what it must never do (\"Must never: …\")")];
    }
    Vec::new()
}

/// Members `ARCHITECTURE.md` does not name as `` `path/` ``.
fn unnamed_members(architecture: &str, members: &[String]) -> Vec<String> {
    members
        .iter()
        .filter(|m| !architecture.contains(&format!("`{m}/`")))
        .map(|m| format!("ARCHITECTURE.md does not name the workspace member `{m}/`"))
        .collect()
}

/// Every `docs/<path>` named in `text`, trailing punctuation removed.
fn docs_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let preceded_by_word = rest[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_alphanumeric() || "_./-".contains(c))).unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches(['.', '/']);
        if !preceded_by_word && path.len() > "docs/".len() {
            found.insert(path.to_string());
        }
        rest = &tail[end.max(1)..];
    }
    found
}

/// Differences between the fuzz target lists: CI's, the directory's, the manifest's.
fn fuzz_list_problems(ci: &[&str], files: &BTreeSet<String>, bins: &BTreeSet<String>) -> Vec<String> {
    let ci: BTreeSet<String> = ci.iter().map(|s| s.to_string()).collect();
    let mut problems = Vec::new();
    for (a_name, a, b_name, b) in [
        ("fuzz/fuzz_targets/", files, "xtask's FUZZ_TARGETS", &ci),
        ("xtask's FUZZ_TARGETS", &ci, "fuzz/fuzz_targets/", files),
        ("fuzz/fuzz_targets/", files, "fuzz/Cargo.toml's [[bin]]s", bins),
        ("fuzz/Cargo.toml's [[bin]]s", bins, "fuzz/fuzz_targets/", files),
    ] {
        for missing in a.difference(b) {
            problems.push(format!("fuzz target {missing} is in {a_name} but not in {b_name}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn members() -> Vec<String> {
        let members = workspace_members(&read(&crate::root().join("Cargo.toml")));
        assert!(members.len() > 10, "the workspace manifest's members were not found: {members:?}");
        members
    }

    fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "corpus" && name != "artifacts" {
                rust_sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_crate_says_its_job_and_what_it_must_never_do() {
        let root = crate::root();
        let problems: Vec<String> =
            members().iter().flat_map(|m| crate_doc_problems(m, &read(&crate_root(&root.join(m))))).collect();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(crate_doc_problems("x", "use std::io;\n"), ["x: does not open with a `//!` block saying its job"]);
        assert_eq!(crate_doc_problems("x", "//! Parses things.\n\nfn f() {}\n// must never\n").len(), 1);
        assert!(crate_doc_problems("x", "//! Parses things.\n//!\n//! Must never: panic.\n").is_empty());
    }

    #[test]
    fn architecture_names_every_workspace_member() {
        let problems = unnamed_members(&read(&crate::root().join("ARCHITECTURE.md")), &members());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(unnamed_members("`a/` and b/", &["a".into(), "b".into()]).len(), 1);
    }

    #[test]
    fn every_docs_path_named_in_the_code_exists() {
        let root = crate::root();
        let mut sources = Vec::new();
        for dir in members().iter().map(String::as_str).chain(["fuzz", "modules"]) {
            rust_sources(&root.join(dir), &mut sources);
        }
        assert!(sources.len() > 50, "only {} Rust sources found", sources.len());
        let mut problems = Vec::new();
        for source in &sources {
            for path in docs_paths(&read(source)) {
                if !root.join(&path).exists() {
                    problems.push(format!("{} names {path}, which does not exist", source.display()));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        let found = docs_paths("see `docs/benchmarks.md`. and (docs/sandbox.md), not mydocs/x.md or docs/");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["docs/benchmarks.md", "docs/sandbox.md"]);
    }

    #[test]
    fn the_fuzz_targets_ci_runs_are_the_fuzz_directory() {
        let fuzz = crate::root().join("fuzz");
        let files: BTreeSet<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
            .expect("fuzz/fuzz_targets")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
            .collect();
        let manifest = read(&fuzz.join("Cargo.toml"));
        let bins: BTreeSet<String> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|b| {
                b.lines().find_map(|l| l.trim().strip_prefix("name = ")).map(|n| n.trim_matches('"').to_string())
            })
            .collect();
        let problems = fuzz_list_problems(crate::FUZZ_TARGETS, &files, &bins);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(files.len(), crate::FUZZ_TARGETS.len());
        let one: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(fuzz_list_problems(&["a", "b"], &one, &one).len(), 1);
    }

    #[test]
    fn workspace_members_are_read_from_the_manifest() {
        assert_eq!(workspace_members("[workspace]\nmembers = [\"a\", \"b/c\"]\nexclude = [\"x\"]"), ["a", "b/c"]);
        assert!(workspace_members("[package]").is_empty());
    }
}
