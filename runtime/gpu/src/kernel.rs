//! Governed GPU kernels: the request (a release-signed PTX or cubin image, hash-pinned like a
//! WASM module, its entry point, its input and output sizes), the budget check made before any
//! device memory is allocated ([`plan`], pure), and the launch through cudarc ([`Launcher`])
//! with a wall-clock limit.
//!
//! The kernel ABI every governed kernel has (`docs/gpu.md`):
//! `extern "C" __global__ void entry(const uint8_t *input, uint64_t input_len, uint8_t *output,
//! uint64_t output_len)`, launched over `ceil(max(output_len, 1) / threads)` blocks of
//! `threads` threads; the output buffer starts zeroed.
//!
//! Must never: allocate before the budget is checked; launch a kernel whose image is not the
//! one the engine verified (it hands the bytes over, this module only launches them); create a
//! CUDA context without first checking that the driver library loads (cudarc panics there).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sovereign_boot_contract::gpu::GpuSettings;

/// The most threads per block a kernel may ask for (CUDA's limit).
pub const MAX_THREADS: u32 = 1024;

/// What a `gpu_kernel` stage asks for (from the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLimits {
    /// Entry point name.
    pub entry: String,
    /// Output buffer size, bytes.
    pub output_bytes: u64,
    /// Threads per block.
    pub threads: u32,
    /// The device memory this launch may use (input + output), bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit, milliseconds.
    pub time_limit_ms: u64,
}

/// Why a kernel did not run, or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The request asks for more than it may.
    #[error("over budget: {0}")]
    OverBudget(String),
    /// The image or entry name cannot be what was signed.
    #[error("kernel image refused: {0}")]
    BadImage(String),
    /// No GPU to run on.
    #[error("no GPU: {0}")]
    NoGpu(String),
    /// The driver refused a step.
    #[error("CUDA: {0}")]
    Driver(String),
    /// The kernel ran past its wall-clock limit (it may still occupy the device: the runtime
    /// engages the emergency stop).
    #[error("ran past its {0} ms wall-clock limit")]
    TimeLimit(u64),
}

/// The budget check's result: what will be allocated and launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of device memory: input + output.
    pub device_bytes: u64,
    /// Blocks.
    pub blocks: u32,
    /// Threads per block.
    pub threads: u32,
    /// Wall-clock limit.
    pub time_limit: Duration,
}

/// Checks a launch against the stage's own limits, the node's signed limits and the memory the
/// device has free — before anything is allocated. Pure.
pub fn plan(limits: &KernelLimits, input_len: u64, node: &GpuSettings, device_free: u64) -> Result<Plan, KernelError> {
    if !valid_entry(&limits.entry) {
        return Err(KernelError::BadImage(format!(
            "entry point {:?} must be 1-64 characters of [A-Za-z0-9_]",
            limits.entry
        )));
    }
    if limits.threads == 0 || limits.threads > MAX_THREADS {
        return Err(KernelError::OverBudget(format!("threads {} must be 1 to {MAX_THREADS}", limits.threads)));
    }
    let device_bytes = input_len
        .checked_add(limits.output_bytes)
        .ok_or_else(|| KernelError::OverBudget("input and output sizes overflow".into()))?;
    if device_bytes > limits.memory_bytes {
        return Err(KernelError::OverBudget(format!(
            "{device_bytes} bytes of device memory (input {input_len} + output {}) over the stage's memory_bytes {}",
            limits.output_bytes, limits.memory_bytes
        )));
    }
    if device_bytes > node.kernel_memory_max {
        return Err(KernelError::OverBudget(format!(
            "{device_bytes} bytes of device memory over the node's kernel_memory_max {}",
            node.kernel_memory_max
        )));
    }
    if device_bytes > device_free {
        return Err(KernelError::OverBudget(format!(
            "{device_bytes} bytes of device memory, the device has {device_free} free"
        )));
    }
    if limits.time_limit_ms == 0 || limits.time_limit_ms > node.kernel_time_max_ms {
        return Err(KernelError::OverBudget(format!(
            "time limit {} ms must be 1 to the node's kernel_time_max_ms {}",
            limits.time_limit_ms, node.kernel_time_max_ms
        )));
    }
    let blocks = limits.output_bytes.max(1).div_ceil(u64::from(limits.threads));
    let blocks = u32::try_from(blocks)
        .ok()
        .filter(|b| *b < (1 << 31))
        .ok_or_else(|| KernelError::OverBudget(format!("{blocks} blocks is more than CUDA launches")))?;
    Ok(Plan { device_bytes, blocks, threads: limits.threads, time_limit: Duration::from_millis(limits.time_limit_ms) })
}

fn valid_entry(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The image's kind, read from its first bytes: a cubin is an ELF file; PTX is text, and text
/// with a NUL byte in it cannot be handed to the driver.
pub fn image_kind(image: &[u8]) -> Result<&'static str, KernelError> {
    if image.starts_with(b"\x7fELF") {
        return Ok("cubin");
    }
    if image.is_empty() || image.contains(&0) || std::str::from_utf8(image).is_err() {
        return Err(KernelError::BadImage("neither a cubin (ELF) nor PTX text without NUL bytes".into()));
    }
    Ok("ptx")
}

/// What a finished launch gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// The output buffer.
    pub output: Vec<u8>,
    /// Wall-clock time from the upload to the download, microseconds.
    pub micros: u64,
}

/// A CUDA context on one device.
pub struct Launcher {
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Launcher")
    }
}

/// Whether the CUDA driver library (`libcuda.so`) loads here.
pub fn driver_present() -> bool {
    crate::launch::culib_present()
}

impl Launcher {
    /// Opens device `ordinal`: refused as [`KernelError::NoGpu`] when the driver library is
    /// missing (checked first: cudarc panics otherwise) or the device cannot be opened.
    pub fn open(ordinal: usize) -> Result<Self, KernelError> {
        if !driver_present() {
            return Err(KernelError::NoGpu("the CUDA driver library (libcuda.so) is not present".into()));
        }
        let ctx = cudarc::driver::CudaContext::new(ordinal)
            .map_err(|e| KernelError::NoGpu(format!("CUDA device {ordinal} cannot be opened: {e}")))?;
        Ok(Launcher { ctx })
    }

    /// Free and total device memory, bytes.
    pub fn memory(&self) -> Result<(u64, u64), KernelError> {
        let (free, total) = self.ctx.mem_get_info().map_err(|e| KernelError::Driver(e.to_string()))?;
        Ok((free as u64, total as u64))
    }

    /// Plans and launches: the budget is checked against the device's free memory before
    /// anything is allocated; the launch is waited for until its wall-clock limit.
    pub fn run(
        &self,
        image: &[u8],
        limits: &KernelLimits,
        input: &[u8],
        node: &GpuSettings,
    ) -> Result<Launched, KernelError> {
        let kind = image_kind(image)?;
        let (free, _) = self.memory()?;
        let plan = plan(limits, input.len() as u64, node, free)?;
        let started = Instant::now();
        let driver =
            |what: &'static str| move |e: cudarc::driver::DriverError| KernelError::Driver(format!("{what}: {e}"));
        let ptx = if kind == "cubin" {
            cudarc::nvrtc::Ptx::from_binary(image.to_vec())
        } else {
            cudarc::nvrtc::Ptx::from_src(String::from_utf8_lossy(image).into_owned())
        };
        let module = self.ctx.load_module(ptx).map_err(driver("loading the kernel image"))?;
        let function = module.load_function(&limits.entry).map_err(driver("finding the entry point"))?;
        let stream = self.ctx.default_stream();
        // A zero-length upload is not an allocation CUDA makes; one byte stands in.
        let input_device = if input.is_empty() {
            stream.alloc_zeros::<u8>(1).map_err(driver("allocating the input"))?
        } else {
            stream.clone_htod(input).map_err(driver("uploading the input"))?
        };
        let output_len =
            usize::try_from(limits.output_bytes.max(1)).map_err(|_| KernelError::OverBudget("output size".into()))?;
        let mut output_device = stream.alloc_zeros::<u8>(output_len).map_err(driver("allocating the output"))?;
        crate::launch::launch(
            &stream,
            &function,
            &input_device,
            input.len() as u64,
            &mut output_device,
            limits.output_bytes,
            &plan,
        )
        .map_err(driver("launching"))?;
        let done = stream.record_event(None).map_err(driver("recording the launch"))?;
        loop {
            match done.try_is_complete() {
                Ok(true) => break,
                Ok(false) if started.elapsed() > plan.time_limit => {
                    return Err(KernelError::TimeLimit(limits.time_limit_ms));
                }
                Ok(false) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => return Err(KernelError::Driver(format!("running: {e}"))),
            }
        }
        let mut output = stream.clone_dtoh(&output_device).map_err(driver("downloading the output"))?;
        output.truncate(limits.output_bytes as usize);
        Ok(Launched { output, micros: started.elapsed().as_micros() as u64 })
    }
}
