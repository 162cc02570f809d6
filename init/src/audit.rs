//! The initramfs audit: every node under the root must be exactly what the signed manifest
//! lists (type, mode, size, SHA-256), nothing may be missing, and nothing unlisted may exist.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use sovereign_boot_contract::manifest::{Manifest, NodeKind};

/// Paths that are mount points PID 1 fills itself; their contents are not initramfs nodes.
pub const MOUNT_POINTS: [&str; 6] = ["/proc", "/sys", "/dev", "/run", "/esp", "/state"];
/// Nodes present besides the manifest's own list.
pub const SELF_NODES: [&str; 2] = [sovereign_boot_contract::MANIFEST_PATH, sovereign_boot_contract::MANIFEST_SIG_PATH];

/// Checks the tree at `root` against `manifest`; returns every discrepancy, one line each.
pub fn audit_tree(root: &Path, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, ()> = BTreeMap::new();
    walk(root, root, manifest, &mut found, &mut problems);
    for f in &manifest.files {
        // Nodes under a mount point (/dev/console) are shadowed by the mount once PID 1 runs.
        let shadowed = MOUNT_POINTS.iter().any(|m| f.path.starts_with(&format!("{m}/")));
        if !found.contains_key(&f.path) && !shadowed {
            problems.push(format!("{}: listed in the manifest but missing", f.path));
        }
    }
    problems
}

fn walk(root: &Path, dir: &Path, manifest: &Manifest, found: &mut BTreeMap<String, ()>, problems: &mut Vec<String>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{}: cannot list: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = format!("/{}", path.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default());
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{rel}: cannot stat: {e}"));
                continue;
            }
        };
        if SELF_NODES.contains(&rel.as_str()) {
            continue;
        }
        let under_mount = MOUNT_POINTS.iter().any(|m| rel.starts_with(&format!("{m}/")));
        if under_mount {
            continue;
        }
        found.insert(rel.clone(), ());
        if MOUNT_POINTS.contains(&rel.as_str()) {
            // Mounted over by PID 1: the manifest lists the directory; what is mounted there is
            // the kernel's, not the initramfs's.
            if manifest.file(&rel).is_none() {
                problems.push(format!("{rel}: mount point missing from the manifest"));
            }
            continue;
        }
        let Some(entry) = manifest.file(&rel) else {
            problems.push(format!("{rel}: present in the initramfs but not in the manifest"));
            continue;
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Directory
        } else if ft.is_file() {
            NodeKind::File
        } else if ft.is_char_device() {
            NodeKind::CharDevice
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else {
            problems.push(format!("{rel}: unexpected node type"));
            continue;
        };
        if kind != entry.kind {
            problems.push(format!("{rel}: is a {kind:?}, the manifest says {:?}", entry.kind));
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode != entry.mode {
            problems.push(format!("{rel}: mode {mode:o}, the manifest says {:o}", entry.mode));
        }
        match kind {
            NodeKind::File => {
                if meta.size() != entry.size {
                    problems.push(format!("{rel}: {} bytes, the manifest says {}", meta.size(), entry.size));
                    continue;
                }
                match fs::read(&path) {
                    Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == entry.sha256 => {}
                    Ok(_) => problems.push(format!("{rel}: SHA-256 differs from the manifest")),
                    Err(e) => problems.push(format!("{rel}: cannot read: {e}")),
                }
            }
            NodeKind::Directory if !MOUNT_POINTS.contains(&rel.as_str()) => {
                walk(root, &path, manifest, found, problems)
            }
            _ => {}
        }
    }
}
