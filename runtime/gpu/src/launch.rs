//! The two calls cudarc offers only as `unsafe`, each with its safety argument. Nothing else
//! in the crate is unsafe.

#![allow(unsafe_code)]

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg as _};

use crate::kernel::Plan;

/// Whether the CUDA driver library loads.
pub(crate) fn culib_present() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on the library's candidate names and drops
    // what it opened; it is unsafe because loading a library runs its initialisers, which for
    // the NVIDIA driver library is what every CUDA program does first.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Launches `function` over the governed kernel ABI (`kernel.rs`).
pub(crate) fn launch(
    stream: &CudaStream,
    function: &CudaFunction,
    input: &CudaSlice<u8>,
    input_len: u64,
    output: &mut CudaSlice<u8>,
    output_len: u64,
    plan: &Plan,
) -> Result<(), DriverError> {
    let config = LaunchConfig { grid_dim: (plan.blocks, 1, 1), block_dim: (plan.threads, 1, 1), shared_mem_bytes: 0 };
    let mut builder = stream.launch_builder(function);
    builder.arg(input).arg(&input_len).arg(output).arg(&output_len);
    // SAFETY: the arguments are exactly the governed kernel ABI — (const u8*, u64, u8*, u64) —
    // with each pointer's buffer at least as long as the length passed beside it (the input
    // buffer is `input_len` bytes, or one when empty; the output `max(output_len, 1)`), both
    // allocated on this stream's context and alive until the launch is waited for by the
    // caller, which holds them. What the kernel does inside those buffers is the signed
    // image's own code: the release key vouched for it, and the device's memory protection
    // confines it to this context.
    unsafe { builder.launch(config) }.map(|_| ())
}
