//! The initramfs audit on a real directory tree: a matching tree passes; an extra file, a
//! changed byte, a changed mode or a missing file is named; a large file is hashed piece by
//! piece on several threads and a changed byte is named with its piece; the caller hears of
//! each verified file (PID 1 loads modules then) and of none after a mismatch.

#![allow(clippy::unwrap_used)] // test code

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use sovereign_boot_contract::manifest::{CHUNK_BYTES, FORMAT, FileEntry, Manifest, ModuleEntry, NodeKind};
use sovereign_init::audit::{audit_tree, hash_files, hashing_order, survey};

fn entry(path: &str, kind: NodeKind, mode: u32, data: &[u8]) -> FileEntry {
    if kind == NodeKind::File {
        return FileEntry::regular(path, mode, data);
    }
    FileEntry { path: path.into(), kind, mode, size: 0, sha256: String::new(), chunks: vec![], rdev: None, link: None }
}

fn setup() -> (tempfile::TempDir, Manifest) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["etc", "etc/sovereign", "usr", "usr/bin", "proc", "sys", "dev", "run", "esp"] {
        fs::create_dir(r.join(d)).unwrap();
        fs::set_permissions(r.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (p, data, mode) in [
        ("init", &b"pid1"[..], 0o755),
        ("usr/bin/sovereign-runtime", b"rt", 0o755),
        ("etc/sovereign/runtime.json", b"{}", 0o644),
    ] {
        fs::write(r.join(p), data).unwrap();
        fs::set_permissions(r.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::write(r.join("etc/sovereign/manifest.json"), b"m").unwrap();
    fs::write(r.join("proc/ignored"), b"kernel's").unwrap();
    let mut files = vec![
        entry("/init", NodeKind::File, 0o755, b"pid1"),
        entry("/usr/bin/sovereign-runtime", NodeKind::File, 0o755, b"rt"),
        entry("/etc/sovereign/runtime.json", NodeKind::File, 0o644, b"{}"),
    ];
    for d in ["/etc", "/etc/sovereign", "/usr", "/usr/bin", "/proc", "/sys", "/dev", "/run", "/esp"] {
        files.push(entry(d, NodeKind::Directory, 0o755, b""));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        kernel_release: "x".into(),
        cmdline: "console=ttyS0".into(),
        runtime: "/usr/bin/sovereign-runtime".into(),
        runtime_config: "/etc/sovereign/runtime.json".into(),
        runtime_config_sha256: String::new(),
        modules: vec![],
        files,
    };
    (root, manifest)
}

#[test]
fn matching_tree_passes_and_every_difference_is_named() {
    let (root, manifest) = setup();
    assert_eq!(audit_tree(root.path(), &manifest, 2), Vec::<String>::new());

    fs::write(root.path().join("usr/bin/sh"), b"#!").unwrap();
    let p = audit_tree(root.path(), &manifest, 2);
    assert!(p.iter().any(|l| l.starts_with("/usr/bin/sh: present in the initramfs but not in the manifest")), "{p:?}");
    fs::remove_file(root.path().join("usr/bin/sh")).unwrap();

    fs::write(root.path().join("init"), b"pidX").unwrap();
    let p = audit_tree(root.path(), &manifest, 2);
    assert_eq!(p, vec!["/init: SHA-256 differs from the manifest".to_string()]);
    fs::write(root.path().join("init"), b"pid1").unwrap();

    fs::set_permissions(root.path().join("etc/sovereign/runtime.json"), fs::Permissions::from_mode(0o666)).unwrap();
    let p = audit_tree(root.path(), &manifest, 2);
    assert!(p.iter().any(|l| l.contains("runtime.json: mode 666")), "{p:?}");
    fs::set_permissions(root.path().join("etc/sovereign/runtime.json"), fs::Permissions::from_mode(0o644)).unwrap();

    fs::remove_file(root.path().join("usr/bin/sovereign-runtime")).unwrap();
    let p = audit_tree(root.path(), &manifest, 2);
    assert!(p.iter().any(|l| l == "/usr/bin/sovereign-runtime: listed in the manifest but missing"), "{p:?}");
}

/// A runtime of 2.5 pieces plus two "modules", in a tree that matches.
fn large_tree() -> (tempfile::TempDir, Manifest, Vec<u8>) {
    let (root, mut manifest) = setup();
    let runtime: Vec<u8> = (0..(2 * CHUNK_BYTES + CHUNK_BYTES / 2)).map(|i| (i % 253) as u8).collect();
    fs::write(root.path().join("usr/bin/sovereign-runtime"), &runtime).unwrap();
    fs::create_dir(root.path().join("lib")).unwrap();
    fs::set_permissions(root.path().join("lib"), fs::Permissions::from_mode(0o755)).unwrap();
    manifest.files.retain(|f| f.path != "/usr/bin/sovereign-runtime");
    manifest.files.push(entry("/usr/bin/sovereign-runtime", NodeKind::File, 0o755, &runtime));
    manifest.files.push(entry("/lib", NodeKind::Directory, 0o755, b""));
    for name in ["b_second", "a_first"] {
        let path = format!("lib/{name}.ko");
        fs::write(root.path().join(&path), name).unwrap();
        fs::set_permissions(root.path().join(&path), fs::Permissions::from_mode(0o644)).unwrap();
        manifest.files.push(entry(&format!("/{path}"), NodeKind::File, 0o644, name.as_bytes()));
    }
    // Load order differs from path order on purpose.
    manifest.modules = vec![
        ModuleEntry { name: "b_second".into(), path: "/lib/b_second.ko".into() },
        ModuleEntry { name: "a_first".into(), path: "/lib/a_first.ko".into() },
    ];
    manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    manifest.check_consistency().unwrap();
    (root, manifest, runtime)
}

#[test]
fn a_large_file_is_hashed_piece_by_piece_and_a_changed_byte_names_its_piece() {
    let (root, manifest, mut runtime) = large_tree();
    for workers in [1, 3] {
        assert_eq!(audit_tree(root.path(), &manifest, workers), Vec::<String>::new(), "{workers} workers");
    }
    // One byte changed in the second piece (same size: the survey passes, the hash does not).
    runtime[(CHUNK_BYTES + 17) as usize] ^= 1;
    fs::write(root.path().join("usr/bin/sovereign-runtime"), &runtime).unwrap();
    for workers in [1, 3] {
        assert_eq!(
            audit_tree(root.path(), &manifest, workers),
            vec![format!(
                "/usr/bin/sovereign-runtime: SHA-256 of bytes {CHUNK_BYTES}..{} differs from the manifest",
                2 * CHUNK_BYTES
            )]
        );
    }
    // The last, shorter piece too.
    runtime[(CHUNK_BYTES + 17) as usize] ^= 1;
    let last = runtime.len() - 1;
    runtime[last] ^= 0x80;
    fs::write(root.path().join("usr/bin/sovereign-runtime"), &runtime).unwrap();
    let p = audit_tree(root.path(), &manifest, 2);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains(&format!("bytes {}..{}", 2 * CHUNK_BYTES, runtime.len())), "{p:?}");
}

/// Hashes the tree on one worker in PID 1's order: the problems, and the files announced as
/// verified, in the order they were.
fn hash_in_order(root: &std::path::Path, manifest: &Manifest) -> (Vec<String>, Vec<String>) {
    let files = hashing_order(manifest, survey(root, manifest).files);
    let mut seen = Vec::new();
    let problems = hash_files(root, &files, 1, |p| {
        seen.push(p.to_string());
        Ok::<(), String>(())
    })
    .unwrap();
    (problems, seen)
}

#[test]
fn modules_come_first_in_load_order_and_nothing_is_reported_verified_after_a_mismatch() {
    let (root, manifest, _) = large_tree();
    let s = survey(root.path(), &manifest);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let order: Vec<&str> = hashing_order(&manifest, s.files).iter().map(|f| f.path.as_str()).collect();
    assert_eq!(&order[..3], ["/lib/b_second.ko", "/lib/a_first.ko", "/usr/bin/sovereign-runtime"]);

    // With one worker, files verify in the order given: the modules first, in load order.
    let (problems, seen) = hash_in_order(root.path(), &manifest);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(&seen[..2], ["/lib/b_second.ko", "/lib/a_first.ko"]);
    assert_eq!(seen.len(), survey(root.path(), &manifest).files.len());

    // The first module's bytes changed: reported, and no file is announced as verified after it
    // (with one worker, nothing was announced before it either).
    fs::write(root.path().join("lib/b_second.ko"), "B_second").unwrap();
    let (problems, seen) = hash_in_order(root.path(), &manifest);
    assert_eq!(problems, vec!["/lib/b_second.ko: SHA-256 differs from the manifest".to_string()]);
    assert!(seen.is_empty(), "{seen:?}");

    // An error from the caller (a module that fails to load) stops the hashing and comes back.
    fs::write(root.path().join("lib/b_second.ko"), "b_second").unwrap();
    let files = hashing_order(&manifest, survey(root.path(), &manifest).files);
    let result = hash_files(root.path(), &files, 2, |p| Err(format!("loading {p} failed")));
    assert_eq!(result, Err("loading /lib/b_second.ko failed".to_string()));
}
