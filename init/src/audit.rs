//! The initramfs audit: every node under the root must be exactly what the signed manifest
//! lists (type, mode, size, SHA-256), nothing may be missing, and nothing unlisted may exist.
//!
//! Two steps, so PID 1 can use every CPU and load a module as soon as its own bytes are proven:
//! [`survey`] checks the tree's shape (which nodes exist, their kinds, modes and sizes) without
//! reading content; [`hash_files`] then hashes every piece of every file on several threads and
//! tells the caller each file that verified, in the calling thread. [`audit_tree`] is both in
//! one call.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use sha2::{Digest as _, Sha256};
use sovereign_boot_contract::manifest::{FileEntry, Manifest, NodeKind};

/// Paths that are mount points PID 1 fills itself; their contents are not initramfs nodes.
pub const MOUNT_POINTS: [&str; 6] = ["/proc", "/sys", "/dev", "/run", "/esp", "/state"];
/// Nodes present besides the manifest's own list.
pub const SELF_NODES: [&str; 2] = [sovereign_boot_contract::MANIFEST_PATH, sovereign_boot_contract::MANIFEST_SIG_PATH];

/// What [`survey`] found: the tree's discrepancies, and the files whose content is still to be
/// hashed (present, a regular file, of the listed size).
#[derive(Debug)]
pub struct Survey<'m> {
    /// One line per discrepancy; empty when the tree has the manifest's shape.
    pub problems: Vec<String>,
    /// The manifest's entries for the files to hash, in manifest (path) order.
    pub files: Vec<&'m FileEntry>,
}

/// Checks the tree at `root` against `manifest` (hashes every file, on up to `workers` threads);
/// returns every discrepancy, one line each.
pub fn audit_tree(root: &Path, manifest: &Manifest, workers: usize) -> Vec<String> {
    let mut survey = survey(root, manifest);
    if !survey.problems.is_empty() {
        return survey.problems;
    }
    let Ok(problems) = hash_files(root, &survey.files, workers, |_| Ok::<(), std::convert::Infallible>(()));
    survey.problems.extend(problems);
    survey.problems
}

/// Checks the shape of the tree at `root` against `manifest` without reading file content.
pub fn survey<'m>(root: &Path, manifest: &'m Manifest) -> Survey<'m> {
    let mut survey = Survey { problems: Vec::new(), files: Vec::new() };
    let mut found = BTreeSet::new();
    walk(root, root, manifest, &mut found, &mut survey);
    for f in &manifest.files {
        // Nodes under a mount point (/dev/console) are shadowed by the mount once PID 1 runs.
        let shadowed = MOUNT_POINTS.iter().any(|m| f.path.starts_with(&format!("{m}/")));
        if !found.contains(&f.path) && !shadowed {
            survey.problems.push(format!("{}: listed in the manifest but missing", f.path));
        }
    }
    survey.files.sort_by(|a, b| a.path.cmp(&b.path));
    survey
}

/// The order to hash `files` in: the modules' files in load order first (PID 1 loads each as
/// soon as it verifies), then the rest largest first (so the last pieces taken are small).
pub fn hashing_order<'m>(manifest: &Manifest, mut files: Vec<&'m FileEntry>) -> Vec<&'m FileEntry> {
    let load_position = |f: &FileEntry| manifest.modules.iter().position(|m| m.path == f.path);
    files.sort_by_key(|f| match load_position(f) {
        Some(i) => (0, i, 0),
        None => (1, 0, u64::MAX - f.size),
    });
    files
}

/// Hashes every piece ([`FileEntry::pieces`]) of `files` under `root` on `workers` threads
/// (at least one), in the order given (pieces of earlier files first). Calls `verified` with a
/// file's path, on the calling thread, once all its pieces matched; after the first mismatch it
/// calls it no more and the workers stop taking pieces. Returns the mismatches, one line each,
/// sorted; an error from `verified` stops the hashing and is returned as is.
pub fn hash_files<E>(
    root: &Path,
    files: &[&FileEntry],
    workers: usize,
    mut verified: impl FnMut(&str) -> Result<(), E>,
) -> Result<Vec<String>, E> {
    let pieces: Vec<(usize, u64, u64, &str)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.pieces().into_iter().map(move |(offset, len, digest)| (i, offset, len, digest)))
        .collect();
    let mut left: Vec<usize> = files.iter().map(|f| f.pieces().len()).collect();
    // A file of no pieces (impossible for a consistent manifest) cannot count as verified.
    let mut problems: Vec<String> = files
        .iter()
        .zip(&left)
        .filter(|(_, n)| **n == 0)
        .map(|(f, _)| format!("{}: the manifest lists nothing to hash", f.path))
        .collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(!problems.is_empty());
    let outcome = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (next, stop, pieces, files) = (&next, &stop, &pieces, files);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(&(file, offset, len, digest)) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let whole = offset == 0 && len == files[file].size;
                    let result = check_piece(root, &files[file].path, offset, len, digest, whole);
                    if tx.send((file, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (file, result) in rx {
            if let Err(line) = result {
                problems.push(line);
                stop.store(true, Ordering::Relaxed);
                continue;
            }
            left[file] -= 1;
            if left[file] == 0
                && problems.is_empty()
                && let Err(e) = verified(&files[file].path)
            {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    });
    outcome?;
    if problems.is_empty() {
        // Every piece was taken and matched unless the workers stopped early: say so rather
        // than report a tree whose files were not all read.
        if let Some(f) = files.iter().zip(&left).find(|(_, n)| **n != 0).map(|(f, _)| f) {
            problems.push(format!("{}: not every piece was hashed", f.path));
        }
    }
    problems.sort();
    Ok(problems)
}

fn check_piece(root: &Path, path: &str, offset: u64, len: u64, digest: &str, whole: bool) -> Result<(), String> {
    let full = root.join(path.trim_start_matches('/'));
    let file = fs::File::open(&full).map_err(|e| format!("{path}: cannot open: {e}"))?;
    let len = usize::try_from(len).map_err(|_| format!("{path}: a piece of {len} bytes does not fit in memory"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, offset).map_err(|e| format!("{path}: cannot read: {e}"))?;
    if hex::encode(Sha256::digest(&bytes)) == digest {
        Ok(())
    } else if whole {
        Err(format!("{path}: SHA-256 differs from the manifest"))
    } else {
        Err(format!("{path}: SHA-256 of bytes {offset}..{} differs from the manifest", offset + len as u64))
    }
}

fn walk<'m>(root: &Path, dir: &Path, manifest: &'m Manifest, found: &mut BTreeSet<String>, survey: &mut Survey<'m>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            survey.problems.push(format!("{}: cannot list: {e}", dir.display()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                survey.problems.push(format!("{}: cannot list: {e}", dir.display()));
                continue;
            }
        };
        let path = entry.path();
        let rel = format!("/{}", path.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default());
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                survey.problems.push(format!("{rel}: cannot stat: {e}"));
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
        found.insert(rel.clone());
        if MOUNT_POINTS.contains(&rel.as_str()) {
            // Mounted over by PID 1: the manifest lists the directory; what is mounted there is
            // the kernel's, not the initramfs's.
            if manifest.file(&rel).is_none() {
                survey.problems.push(format!("{rel}: mount point missing from the manifest"));
            }
            continue;
        }
        let Some(listed) = manifest.file(&rel) else {
            survey.problems.push(format!("{rel}: present in the initramfs but not in the manifest"));
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
            survey.problems.push(format!("{rel}: unexpected node type"));
            continue;
        };
        if kind != listed.kind {
            survey.problems.push(format!("{rel}: is a {kind:?}, the manifest says {:?}", listed.kind));
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode != listed.mode {
            survey.problems.push(format!("{rel}: mode {mode:o}, the manifest says {:o}", listed.mode));
        }
        match kind {
            NodeKind::File if meta.size() != listed.size => {
                survey.problems.push(format!("{rel}: {} bytes, the manifest says {}", meta.size(), listed.size));
            }
            NodeKind::File => survey.files.push(listed),
            NodeKind::Directory if !MOUNT_POINTS.contains(&rel.as_str()) => walk(root, &path, manifest, found, survey),
            _ => {}
        }
    }
}
