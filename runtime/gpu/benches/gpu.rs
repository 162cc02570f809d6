//! GPU governance overheads (SPEC §9 has no budget for them; issue 18 asks them measured):
//!
//! - the monitor's judging pass (validators and enforcement decisions) over one sample of eight
//!   busy H100-shaped devices, against the naive baseline of only copying the sample (what a
//!   monitor that judges nothing does with it) — on every machine;
//! - with `--features device-tests` on a machine with a GPU: one NVML sampling pass over every
//!   device against one bare NVML call per device (`memory_info`), and a governed kernel launch
//!   (`Launcher::run`: budget plan, module load, upload, launch, wait, download) against a bare
//!   cudarc launch of the same kernel with everything loaded once.
//!
//! Run: `cargo bench -p sovereign-gpu --bench gpu` (prints a Markdown table).

use sovereign_bench::{Stats, time};

/// `| name | n | p50 µs | p99 µs |`: these passes take microseconds.
fn row(s: &Stats) -> String {
    let us = |d: std::time::Duration| format!("{:.2}", d.as_secs_f64() * 1e6);
    format!("| {} | {} | {} | {} |", s.name, s.samples.len(), us(s.percentile(0.5)), us(s.percentile(0.99)))
}
use sovereign_boot_contract::gpu::GpuSettings;
use sovereign_gpu::reading::{DeviceReading, ProcessUse, Sample};
use sovereign_gpu::{History, decide, validate};

fn busy(index: u32) -> DeviceReading {
    DeviceReading {
        index,
        uuid: format!("GPU-5e1a3f0c-8a2b-4c1d-9e7f-0123456789{index:02}"),
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_used: Some(71_303_168_000),
        memory_total: Some(85_520_809_984),
        utilization_pct: Some(97),
        temperature_c: Some(71),
        power_mw: Some(612_345),
        power_limit_mw: Some(700_000),
        ecc_uncorrected: Some(0),
        ecc_corrected: Some(3),
        throttle_reasons: Some(0),
        processes: vec![ProcessUse { pid: 4242, used_bytes: Some(70_778_880_000) }],
        unreadable: vec![],
    }
}

fn main() {
    let sample = Sample { taken_ms: 0, devices: (0..8).map(busy).collect() };
    let limits = GpuSettings::default();
    let mut history = History::default();
    let judged = time("monitor judging pass, 8 devices (validate + decide)", 20_000, || {
        let v = validate(&mut history, &sample, &limits);
        decide(&v, &sample, &limits)
    });
    let copied = time("baseline: copy the sample only", 20_000, || sample.clone());
    println!("| benchmark | n | p50 µs | p99 µs |\n| --- | ---: | ---: | ---: |");
    println!("{}", row(&judged));
    println!("{}", row(&copied));
    #[cfg(feature = "device-tests")]
    device::rows();
}

#[cfg(feature = "device-tests")]
mod device {
    use super::row;
    use cudarc::driver::{LaunchConfig, PushKernelArg as _};
    use sovereign_bench::time;
    use sovereign_boot_contract::gpu::GpuSettings;
    use sovereign_gpu::NvmlMonitor;
    use sovereign_gpu::kernel::{KernelLimits, Launcher};

    pub fn rows() {
        let (monitor, presence) = NvmlMonitor::open().unwrap_or_else(|absent| panic!("{}", absent.describe()));
        eprintln!("{}", presence.describe());
        println!("{}", row(&time("NVML sampling pass, every device", 2_000, || monitor.sample(0))));
        let nvml = nvml_wrapper::Nvml::init().expect("NVML");
        let count = nvml.device_count().expect("count");
        println!(
            "{}",
            row(&time("baseline: one bare NVML call per device (memory_info)", 2_000, || {
                (0..count)
                    .map(|i| nvml.device_by_index(i).and_then(|d| d.memory_info()).map(|m| m.used))
                    .collect::<Vec<_>>()
            }))
        );
        let ptx =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/kernels/invert.ptx")).expect("ptx");
        let launcher = Launcher::open(0).expect("launcher");
        let limits = KernelLimits {
            entry: "invert".into(),
            output_bytes: 4096,
            threads: 256,
            memory_bytes: 1 << 20,
            time_limit_ms: 5_000,
        };
        let input = vec![7u8; 4096];
        let node = GpuSettings::default();
        println!(
            "{}",
            row(&time("governed kernel launch, 4 KiB in and out (Launcher::run)", 500, || {
                launcher.run(&ptx, &limits, &input, &node).expect("launch")
            }))
        );
        // Bare: the module loaded and the buffers allocated once; each iteration uploads,
        // launches, waits and downloads.
        let ctx = cudarc::driver::CudaContext::new(0).expect("context");
        let module =
            ctx.load_module(cudarc::nvrtc::Ptx::from_src(String::from_utf8(ptx).expect("utf-8"))).expect("module");
        let function = module.load_function("invert").expect("function");
        let stream = ctx.default_stream();
        let mut output = stream.alloc_zeros::<u8>(4096).expect("alloc");
        println!(
            "{}",
            row(&time("baseline: bare cudarc launch of the same kernel (loaded once)", 500, || {
                let device_input = stream.clone_htod(&input).expect("upload");
                let (n_in, n_out) = (4096u64, 4096u64);
                let mut builder = stream.launch_builder(&function);
                builder.arg(&device_input).arg(&n_in).arg(&mut output).arg(&n_out);
                // SAFETY: the arguments match the kernel's (const u8*, u64, u8*, u64) signature
                // and both buffers hold 4096 bytes.
                #[allow(unsafe_code)]
                unsafe { builder.launch(LaunchConfig::for_num_elems(4096)) }.expect("launch");
                stream.clone_dtoh(&output).expect("download")
            }))
        );
    }
}
