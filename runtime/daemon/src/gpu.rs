//! The GPU monitor's thread: one pass of [`GpuRuntime::tick`] every configured interval, for as
//! long as the runtime runs — started only when the node has a GPU.
//!
//! Must never: start on a node without a GPU (there is nothing to sample), or stop on a failed
//! pass (it is said, and the next pass tries again).

use std::sync::Arc;
use std::time::Duration;

use sovereign_pipeline::gpu::GpuRuntime;

/// Starts the monitor when there is a GPU; says which in one line either way.
pub fn start_monitor(gpu: Arc<GpuRuntime>) -> Result<(), String> {
    if !gpu.available() {
        println!("sovereign-runtime: GPU governance: {}", gpu.describe());
        return Ok(());
    }
    let interval = Duration::from_millis(gpu.settings().sample_interval_ms);
    println!("sovereign-runtime: GPU governance: {} (sampled every {} ms)", gpu.describe(), interval.as_millis());
    std::thread::Builder::new()
        .name("gpu-monitor".into())
        .spawn(move || {
            loop {
                match gpu.tick() {
                    Ok(lines) => lines.iter().for_each(|l| println!("sovereign-runtime: {l}")),
                    Err(e) => println!("sovereign-runtime: GPU monitor pass failed: {e}"),
                }
                std::thread::sleep(interval);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("starting the GPU monitor: {e}"))
}
