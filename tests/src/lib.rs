//! Shared fixtures for the end-to-end tests: the image `cargo xtask image` built (one per
//! suite run, shared by every test), variants of it built on demand, and a lock so that only
//! one guest boots at a time (two cores, TCG).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use sovereign_image::build::{self, BuildInput, BuildOutput, Kernel, RuntimeConfig, Tamper};
use sovereign_image::keys::{self, KeySet};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where `cargo xtask image` put its outputs.
pub fn build_dir() -> PathBuf {
    root().join("build")
}

/// The built binaries (image profile).
pub fn binaries() -> (PathBuf, PathBuf) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target")).join("image");
    (target.join("sovereign-init"), target.join("sovereign-runtime"))
}

/// The shared image. Panics with what to run when it was not built.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let disk = build_dir().join("image").join("disk.raw");
        assert!(disk.exists(), "{} is missing: run `cargo xtask image` first (`cargo xtask test` does)", disk.display());
        disk
    })
}

/// One guest at a time.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The development keys the shared image was built with.
pub fn dev_keys() -> KeySet {
    keys::load(&build_dir().join("keys")).unwrap_or_else(|e| panic!("loading build/keys: {e:#}"))
}

/// The build input of the shared image (same binaries, kernel, command line).
pub fn base_input() -> BuildInput {
    let (init, runtime) = binaries();
    let kernel: Kernel = build::fetch_debian_kernel(Path::new("/var/cache/sovereign/kernel")).unwrap_or_else(|e| panic!("kernel: {e:#}"));
    BuildInput {
        init,
        runtime,
        kernel,
        version: 1,
        cmdline: build::DEFAULT_CMDLINE.into(),
        config: RuntimeConfig::default(),
        stub: PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
    }
}

/// Builds a variant into `out`.
pub fn variant(input: &BuildInput, keys: &KeySet, out: &Path, tamper: &Tamper<'_>) -> BuildOutput {
    build::build_with(input, keys, out, tamper).unwrap_or_else(|e| panic!("building a variant: {e:#}"))
}
