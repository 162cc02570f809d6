//! `sovereign-image build --gpu-driver DIR`: the NVIDIA kernel modules and user-space libraries
//! an operator supplies, checked and placed in the initramfs — each file hashed in the signed
//! manifest like every other, the modules loaded by PID 1 after the kernel's own, in the order
//! the directory states.
//!
//! The directory (what the NVIDIA driver's `.run` installer or the distribution's packages
//! produce, gathered):
//!
//! ```text
//! DIR/modules.order      the modules' file names, one per line, in load order (nvidia.ko first)
//! DIR/modules/*.ko       the kernel modules, built for this image's kernel
//! DIR/lib/*.so*          libnvidia-ml.so.1, libcuda.so.1 and what they need (symlinks followed)
//! ```
//!
//! Must never: take a module built for another kernel release (its `vermagic` is read and
//! compared), a module the order does not name or an order naming one that is missing, an
//! executable (only `.ko` modules and `.so` libraries are placed), or a file outside `DIR`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

/// Where the driver's libraries go: where the dynamic loader (and so NVML and cudarc's
/// `dlopen`) looks.
pub const LIBRARY_DIR: &str = "/lib/x86_64-linux-gnu";

/// A checked driver directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDriver {
    /// `(module name, file)` in load order.
    pub modules: Vec<(String, PathBuf)>,
    /// `(file name in the initramfs, file)`.
    pub libraries: Vec<(String, PathBuf)>,
}

/// A file for the initramfs: `(path, bytes, mode)`.
pub type PlacedFile = (String, Vec<u8>, u32);
/// A module PID 1 loads: `(name, path in the initramfs)`.
pub type LoadedModule = (String, String);

impl GpuDriver {
    /// The files it adds to the initramfs, and the modules PID 1 loads, for the kernel
    /// `release`.
    pub fn files(&self, release: &str) -> anyhow::Result<(Vec<PlacedFile>, Vec<LoadedModule>)> {
        let mut files = Vec::new();
        let mut load = Vec::new();
        for (name, path) in &self.modules {
            let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let dest = format!("/lib/modules/{release}/extra/nvidia/{file_name}");
            files.push((dest.clone(), fs::read(path).with_context(|| format!("reading {}", path.display()))?, 0o644));
            load.push((name.clone(), dest));
        }
        for (file_name, path) in &self.libraries {
            let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            files.push((format!("{LIBRARY_DIR}/{file_name}"), bytes, 0o755));
        }
        Ok((files, load))
    }
}

/// Reads and checks `dir` against the image's kernel `release` (module `vermagic` by
/// `modinfo`).
pub fn read(dir: &Path, release: &str) -> anyhow::Result<GpuDriver> {
    let order_path = dir.join("modules.order");
    let order = fs::read_to_string(&order_path)
        .with_context(|| format!("--gpu-driver: reading {} (the modules in load order)", order_path.display()))?;
    let mut modules = Vec::new();
    for line in order.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.contains('/') || !line.ends_with(".ko") {
            bail!("--gpu-driver: modules.order names {line:?}: a .ko file name in DIR/modules/ is expected");
        }
        let path = dir.join("modules").join(line);
        let meta = fs::symlink_metadata(&path).with_context(|| {
            format!("--gpu-driver: modules.order names {line}, which is not in {}", dir.join("modules").display())
        })?;
        if !meta.is_file() {
            bail!("--gpu-driver: {} is not a regular file", path.display());
        }
        let vermagic = Command::new("modinfo")
            .args(["-F", "vermagic"])
            .arg(&path)
            .output()
            .with_context(|| "--gpu-driver: running modinfo (kmod)")?;
        let text = String::from_utf8_lossy(&vermagic.stdout);
        let built_for = text.split_whitespace().next().unwrap_or("");
        if !vermagic.status.success() || built_for.is_empty() {
            bail!("--gpu-driver: {line} is not a kernel module (modinfo reads no vermagic)");
        }
        if built_for != release {
            bail!("--gpu-driver: {line} was built for kernel {built_for}, this image's kernel is {release}");
        }
        let name = line.trim_end_matches(".ko").replace('-', "_");
        if modules.iter().any(|(n, _)| *n == name) {
            bail!("--gpu-driver: modules.order names {line} twice");
        }
        modules.push((name, path));
    }
    if modules.is_empty() {
        bail!("--gpu-driver: modules.order names no module");
    }
    for entry in
        fs::read_dir(dir.join("modules")).with_context(|| format!("--gpu-driver: listing {}/modules", dir.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !modules.iter().any(|(_, p)| p.file_name().is_some_and(|f| f.to_string_lossy() == name)) {
            bail!(
                "--gpu-driver: modules/{name} is not in modules.order (every module is loaded, in a stated order, or not shipped)"
            );
        }
    }
    let mut libraries = Vec::new();
    let lib_dir = dir.join("lib");
    for entry in fs::read_dir(&lib_dir).with_context(|| format!("--gpu-driver: listing {}", lib_dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(".so") {
            bail!("--gpu-driver: lib/{name} is not a shared library (only lib*.so* files are placed)");
        }
        let target = fs::canonicalize(entry.path()).with_context(|| format!("--gpu-driver: resolving lib/{name}"))?;
        let base = fs::canonicalize(dir).with_context(|| format!("--gpu-driver: resolving {}", dir.display()))?;
        if !target.starts_with(&base) || !target.is_file() {
            bail!("--gpu-driver: lib/{name} points outside {} or at no file", dir.display());
        }
        let head = fs::read(&target)
            .map(|b| b.get(..4).map(<[u8]>::to_vec))
            .with_context(|| format!("reading {}", target.display()))?;
        if head.as_deref() != Some(b"\x7fELF") {
            bail!("--gpu-driver: lib/{name} is not an ELF shared object");
        }
        libraries.push((name, target));
    }
    libraries.sort();
    for needed in ["libnvidia-ml.so.1", "libcuda.so.1"] {
        if !libraries.iter().any(|(n, _)| n == needed) {
            return Err(anyhow!("--gpu-driver: lib/{needed} is missing (NVML and CUDA are loaded by that name)"));
        }
    }
    Ok(GpuDriver { modules, libraries })
}
