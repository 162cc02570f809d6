//! `--gpu-driver DIR`: a driver directory is checked before it goes into an image — modules
//! built for this kernel, in a stated order, libraries that are ELF shared objects inside the
//! directory — and placed where PID 1 loads the modules and the dynamic loader finds NVML and
//! CUDA. A real module of the image's Debian kernel stands in for `nvidia.ko` (no NVIDIA
//! driver is installable here); real ELF libraries of this machine for NVML and CUDA.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use sovereign_image::gpu_driver::{self, LIBRARY_DIR};

/// The kernel `cargo xtask setup` caches for the image, and a module of it.
fn kernel_module() -> (String, PathBuf) {
    let kernel = sovereign_image::build::fetch_debian_kernel(Path::new("/var/cache/sovereign/kernel")).unwrap();
    let path = kernel.root.join("lib/modules").join(&kernel.release).join("kernel/drivers/net/dummy.ko");
    assert!(path.exists(), "{}", path.display());
    (kernel.release, path)
}

/// A driver directory with `modules` (file name → source) and the two libraries.
fn driver_dir(modules: &[(&str, &Path)], order: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    for (name, from) in modules {
        std::fs::copy(from, dir.path().join("modules").join(name)).unwrap();
    }
    std::fs::write(dir.path().join("modules.order"), order).unwrap();
    // Stand-ins: real ELF shared objects (the names are what NVML and cudarc dlopen).
    let libz = Path::new("/lib/x86_64-linux-gnu/libz.so.1");
    std::fs::copy(libz, dir.path().join("lib/libnvidia-ml.so.1")).unwrap();
    std::fs::copy(libz, dir.path().join("lib/libcuda.so.1")).unwrap();
    dir
}

#[test]
fn a_driver_directory_is_checked_and_placed_for_pid_1_and_the_loader() {
    let (release, module) = kernel_module();
    let dir = driver_dir(&[("nvidia.ko", &module), ("nvidia-uvm.ko", &module)], "nvidia.ko\nnvidia-uvm.ko\n");
    let driver = gpu_driver::read(dir.path(), &release).unwrap();
    let (files, load) = driver.files(&release).unwrap();
    assert_eq!(
        load,
        vec![
            ("nvidia".to_string(), format!("/lib/modules/{release}/extra/nvidia/nvidia.ko")),
            ("nvidia_uvm".to_string(), format!("/lib/modules/{release}/extra/nvidia/nvidia-uvm.ko")),
        ],
        "loaded in the stated order"
    );
    let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
    assert!(paths.contains(&format!("{LIBRARY_DIR}/libnvidia-ml.so.1").as_str()), "{paths:?}");
    assert!(paths.contains(&format!("{LIBRARY_DIR}/libcuda.so.1").as_str()), "{paths:?}");
    assert_eq!(files[0].1, std::fs::read(&module).unwrap(), "the module's bytes, unchanged");
}

#[test]
fn driver_directories_that_do_not_check_are_refused_naming_the_file() {
    let (release, module) = kernel_module();
    let refused =
        |dir: &tempfile::TempDir, release: &str| gpu_driver::read(dir.path(), release).unwrap_err().to_string();
    let dir = driver_dir(&[("nvidia.ko", &module)], "nvidia.ko\n");
    assert_eq!(
        refused(&dir, "6.1.0-99-amd64"),
        format!("--gpu-driver: nvidia.ko was built for kernel {release}, this image's kernel is 6.1.0-99-amd64")
    );
    let dir = driver_dir(&[("nvidia.ko", &module), ("extra.ko", &module)], "nvidia.ko\n");
    assert!(refused(&dir, &release).contains("modules/extra.ko is not in modules.order"));
    let dir = driver_dir(&[("nvidia.ko", &module)], "nvidia.ko\nnvidia-uvm.ko\n");
    assert!(refused(&dir, &release).contains("names nvidia-uvm.ko, which is not in"));
    let dir = driver_dir(&[("nvidia.ko", &module)], "../../etc/passwd.ko\n");
    assert!(refused(&dir, &release).contains("a .ko file name in DIR/modules/ is expected"));
    let not_a_module = driver_dir(&[("nvidia.ko", Path::new("/lib/x86_64-linux-gnu/libz.so.1"))], "nvidia.ko\n");
    assert!(refused(&not_a_module, &release).contains("nvidia.ko is not a kernel module"));
    let dir = driver_dir(&[("nvidia.ko", &module)], "nvidia.ko\n");
    std::fs::remove_file(dir.path().join("lib/libcuda.so.1")).unwrap();
    assert!(refused(&dir, &release).contains("lib/libcuda.so.1 is missing"));
    let dir = driver_dir(&[("nvidia.ko", &module)], "nvidia.ko\n");
    std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/libz.so.1", dir.path().join("lib/libnvidia-cfg.so.1")).unwrap();
    assert!(refused(&dir, &release).contains("points outside"));
    let dir = driver_dir(&[("nvidia.ko", &module)], "nvidia.ko\n");
    std::fs::write(dir.path().join("lib/nvidia-smi"), b"#!/bin/sh\n").unwrap();
    assert!(refused(&dir, &release).contains("lib/nvidia-smi is not a shared library"));
}
