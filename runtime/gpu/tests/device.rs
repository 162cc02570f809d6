//! The GPU tests that need an NVIDIA GPU and its driver: `cargo xtask gpu-check` runs them (the
//! `device-tests` feature); on a machine without a GPU they fail, by name — they are never
//! skipped. NVML sees and samples the devices with plausible readings; a governed kernel (the
//! example PTX, JIT-compiled by the driver) runs and its output is checked byte by byte; a
//! launch over the memory budget is refused before anything is allocated; a kernel that runs
//! past its wall-clock limit is reported as such.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a failed unwrap is a failed test

use sovereign_boot_contract::gpu::GpuSettings;
use sovereign_gpu::kernel::{KernelError, KernelLimits, Launcher};
use sovereign_gpu::{History, NvmlMonitor, Presence, decide, validate};

fn ptx() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/kernels/invert.ptx")).unwrap()
}

fn limits(entry: &str, output_bytes: u64, memory_bytes: u64, time_limit_ms: u64) -> KernelLimits {
    KernelLimits { entry: entry.into(), output_bytes, threads: 256, memory_bytes, time_limit_ms }
}

#[test]
fn nvml_finds_the_devices_and_samples_plausible_readings() {
    let (monitor, presence) = NvmlMonitor::open().unwrap_or_else(|absent| panic!("{}", absent.describe()));
    let Presence::Present { driver, devices } = &presence else { panic!("{presence:?}") };
    println!("{} (driver {driver})", presence.describe());
    assert!(!devices.is_empty());
    let sample = monitor.sample(1);
    assert_eq!(sample.devices.len(), devices.len());
    for d in &sample.devices {
        println!("{}", serde_json::to_string(d).unwrap());
        let d = d.clone().sanitized();
        assert!(d.memory_total.unwrap() > 1 << 30, "{d:?}");
        assert!(d.memory_used.unwrap() <= d.memory_total.unwrap());
        assert!((1..=120).contains(&d.temperature_c.unwrap()), "{d:?}");
        assert!(d.power_limit_mw.unwrap() > 10_000, "{d:?}");
        assert!(d.uuid.starts_with("GPU-"), "{d:?}");
    }
    let mut history = History::default();
    let violations = validate(&mut history, &sample, &GpuSettings::default());
    println!("violations: {violations:?}; actions: {:?}", decide(&violations, &sample, &GpuSettings::default()));
}

#[test]
fn a_governed_kernel_runs_and_its_output_is_what_the_kernel_computes() {
    let launcher = Launcher::open(0).unwrap();
    let input: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = launcher.run(&ptx(), &limits("invert", 16_384, 1 << 20, 5_000), &input, &GpuSettings::default()).unwrap();
    assert_eq!(out.output.len(), 16_384);
    for (i, b) in out.output.iter().enumerate() {
        let want = if i < input.len() { !input[i] } else { 0xff };
        assert_eq!(*b, want, "byte {i}");
    }
    println!("governed launch: {} µs", out.micros);
}

#[test]
fn launches_over_the_memory_budget_are_refused_before_allocation() {
    let launcher = Launcher::open(0).unwrap();
    let (free, total) = launcher.memory().unwrap();
    println!("device memory: {free} free of {total}");
    let over_stage = launcher.run(&ptx(), &limits("invert", 4096, 4096, 1_000), &[0; 16], &GpuSettings::default());
    assert!(
        matches!(&over_stage, Err(KernelError::OverBudget(m)) if m.contains("over the stage's memory_bytes 4096")),
        "{over_stage:?}"
    );
    let node = GpuSettings { kernel_memory_max: u64::MAX, ..GpuSettings::default() };
    let over_device = launcher.run(&ptx(), &limits("invert", free + 1, u64::MAX, 1_000), &[], &node);
    assert!(matches!(&over_device, Err(KernelError::OverBudget(m)) if m.contains("free")), "{over_device:?}");
    // Nothing was allocated: the free memory is what it was (within the driver's own noise).
    let (after, _) = launcher.memory().unwrap();
    assert!(after + (64 << 20) >= free, "{after} free after, {free} before");
}

#[test]
fn a_kernel_past_its_wall_clock_limit_is_reported() {
    let launcher = Launcher::open(0).unwrap();
    let started = std::time::Instant::now();
    let out = launcher.run(&ptx(), &limits("spin", 1, 1 << 20, 300), &[], &GpuSettings::default());
    assert_eq!(out, Err(KernelError::TimeLimit(300)));
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "the caller was not held until the kernel ended");
}

#[test]
fn an_entry_point_the_image_does_not_have_is_a_driver_refusal() {
    let launcher = Launcher::open(0).unwrap();
    let out = launcher.run(&ptx(), &limits("missing", 16, 1 << 20, 1_000), &[1], &GpuSettings::default());
    assert!(matches!(&out, Err(KernelError::Driver(m)) if m.starts_with("finding the entry point")), "{out:?}");
}
