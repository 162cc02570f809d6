//! The initramfs audit on a real directory tree: a matching tree passes; an extra file, a
//! changed byte, a changed mode or a missing file is named.

#![allow(clippy::unwrap_used)] // test code

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use sha2::{Digest as _, Sha256};
use sovereign_boot_contract::manifest::{FORMAT, FileEntry, Manifest, NodeKind};
use sovereign_init::audit::audit_tree;

fn entry(path: &str, kind: NodeKind, mode: u32, data: &[u8]) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        mode,
        size: if kind == NodeKind::File { data.len() as u64 } else { 0 },
        sha256: if kind == NodeKind::File { hex::encode(Sha256::digest(data)) } else { String::new() },
        rdev: None,
        link: None,
    }
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
    assert_eq!(audit_tree(root.path(), &manifest), Vec::<String>::new());

    fs::write(root.path().join("usr/bin/sh"), b"#!").unwrap();
    let p = audit_tree(root.path(), &manifest);
    assert!(p.iter().any(|l| l.starts_with("/usr/bin/sh: present in the initramfs but not in the manifest")), "{p:?}");
    fs::remove_file(root.path().join("usr/bin/sh")).unwrap();

    fs::write(root.path().join("init"), b"pidX").unwrap();
    let p = audit_tree(root.path(), &manifest);
    assert_eq!(p, vec!["/init: SHA-256 differs from the manifest".to_string()]);
    fs::write(root.path().join("init"), b"pid1").unwrap();

    fs::set_permissions(root.path().join("etc/sovereign/runtime.json"), fs::Permissions::from_mode(0o666)).unwrap();
    let p = audit_tree(root.path(), &manifest);
    assert!(p.iter().any(|l| l.contains("runtime.json: mode 666")), "{p:?}");
    fs::set_permissions(root.path().join("etc/sovereign/runtime.json"), fs::Permissions::from_mode(0o644)).unwrap();

    fs::remove_file(root.path().join("usr/bin/sovereign-runtime")).unwrap();
    let p = audit_tree(root.path(), &manifest);
    assert!(p.iter().any(|l| l == "/usr/bin/sovereign-runtime: listed in the manifest but missing"), "{p:?}");
}
