//! The wasmtime edge: one engine (pooling allocator, fuel, epoch interruption, deterministic
//! settings) shared by every stage; a fresh store per run with the stage's grants, limits and
//! input; every way a run can end reported as an [`Outcome`] or a [`Termination`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use sovereign_canonical::sha256;
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};

use crate::manifest::{Capability, ModuleManifest};

/// Largest buffer one host call copies out of a module.
const MAX_HOST_CALL_BYTES: usize = 16 << 20;

/// How often the wall-clock ticker advances the engine's epoch.
const TICK: Duration = Duration::from_millis(5);

/// Resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel (roughly, WASM instructions).
    pub fuel: u64,
    /// Largest linear memory, bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit, milliseconds.
    pub wall_ms: u64,
    /// Largest output artifact, bytes.
    pub max_output: usize,
    /// Largest number of log lines.
    pub max_log_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { fuel: 500_000_000, memory_bytes: 64 << 20, wall_ms: 5_000, max_output: 16 << 20, max_log_lines: 1000 }
    }
}

/// How a run ended when it did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Termination {
    /// The module or its manifest was refused before running.
    #[error("refused: {0}")]
    Refused(String),
    /// The module imports something the stage did not grant (or that does not exist).
    #[error("import not granted: {0}")]
    ImportNotGranted(String),
    /// Ran out of fuel.
    #[error("fuel exhausted ({0} units)")]
    FuelExhausted(u64),
    /// Exceeded the wall-clock limit.
    #[error("wall-clock limit of {0} ms exceeded")]
    WallClock(u64),
    /// Tried to grow memory beyond the limit.
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    /// Recursed too deep.
    #[error("stack exhausted")]
    StackOverflow,
    /// Trapped (unreachable, out-of-bounds access, division by zero, …).
    #[error("trap: {0}")]
    Trap(String),
    /// Returned a non-zero status.
    #[error("stage returned status {0}")]
    Failed(i32),
    /// Broke the host ABI (bad pointer, oversized output, missing export).
    #[error("host ABI violation: {0}")]
    Abi(String),
}

/// A completed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The output artifact.
    pub output: Vec<u8>,
    /// SHA-256 of the output.
    pub output_sha256: [u8; 32],
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Log lines the module wrote.
    pub log: Vec<String>,
}

/// A verified, compiled module and what it may be granted.
#[derive(Debug, Clone)]
pub struct LoadedModule {
    module: Module,
    /// Its manifest.
    pub manifest: ModuleManifest,
    imports: BTreeSet<Capability>,
}

struct State {
    input: Vec<u8>,
    output: Vec<u8>,
    log: Vec<String>,
    limits: Limits,
    store_limits: StoreLimits,
    abi_error: Option<String>,
}

/// The sandbox: one engine for every stage.
pub struct Sandbox {
    engine: Engine,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sandbox")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// An engine whose pooled instances allow at most `max_memory_bytes` of linear memory.
    pub fn new(max_memory_bytes: usize) -> Result<Self, Termination> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(16).total_memories(16).total_tables(16).max_memory_size(max_memory_bytes);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            // No threads: wasmtime's `threads` feature is not compiled in, so a module with
            // shared memory or atomics waits fails to compile.
            .max_wasm_stack(512 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| Termination::Refused(format!("wasm engine: {e}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), Arc::clone(&ticker_stop));
        std::thread::Builder::new()
            .name("sandbox-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| Termination::Refused(format!("epoch ticker: {e}")))?;
        Ok(Sandbox { engine, ticker_stop })
    }

    /// Verifies the manifest (release key, hash) and compiles the module; refuses imports that
    /// are not `sovereign` capabilities the manifest declares.
    pub fn load(
        &self,
        wasm: &[u8],
        manifest: &ModuleManifest,
        release: &VerifyingKey,
    ) -> Result<LoadedModule, Termination> {
        manifest.verify(wasm, release).map_err(Termination::Refused)?;
        if manifest.capabilities.contains(&Capability::GpuKernel) {
            return Err(Termination::Refused(format!(
                "module {}: its manifest signs a GPU kernel image, not a WASM module",
                manifest.name
            )));
        }
        let module = Module::from_binary(&self.engine, wasm)
            .map_err(|e| Termination::Refused(format!("module {}: does not compile: {e}", manifest.name)))?;
        let mut imports = BTreeSet::new();
        for import in module.imports() {
            let name = format!("{}.{}", import.module(), import.name());
            let capability = (import.module() == "sovereign").then(|| Capability::of_import(import.name())).flatten();
            match capability {
                Some(c) if manifest.capabilities.contains(&c) => {
                    imports.insert(c);
                }
                Some(c) => {
                    return Err(Termination::ImportNotGranted(format!(
                        "{name} needs capability {}, which the manifest does not declare",
                        c.name()
                    )));
                }
                None => return Err(Termination::ImportNotGranted(format!("{name} is not a host capability"))),
            }
        }
        Ok(LoadedModule { module, manifest: manifest.clone(), imports })
    }

    /// Runs `module`'s `run() -> i32` export with `input`, granting `grants`.
    pub fn run(
        &self,
        module: &LoadedModule,
        grants: &[Capability],
        input: &[u8],
        limits: Limits,
    ) -> Result<Outcome, Termination> {
        if let Some(missing) = module.imports.iter().find(|c| !grants.contains(c)) {
            return Err(Termination::ImportNotGranted(format!(
                "module {} imports capability {}, which this stage does not grant",
                module.manifest.name,
                missing.name()
            )));
        }
        let state = State {
            input: input.to_vec(),
            output: Vec::new(),
            log: Vec::new(),
            limits,
            store_limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build(),
            abi_error: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.store_limits);
        store.set_fuel(limits.fuel).map_err(|e| Termination::Refused(format!("fuel: {e}")))?;
        store.set_epoch_deadline((limits.wall_ms / TICK.as_millis() as u64).max(1));
        let linker = self.linker(&module.imports)?;
        let result = linker.instantiate(&mut store, &module.module).and_then(|instance| {
            let run = instance.get_typed_func::<(), i32>(&mut store, "run")?;
            run.call(&mut store, ())
        });
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.into_data();
        if let Some(abi) = state.abi_error {
            return Err(Termination::Abi(abi));
        }
        match result {
            Ok(0) => {
                Ok(Outcome { output_sha256: sha256(&state.output), output: state.output, fuel_used, log: state.log })
            }
            Ok(status) => Err(Termination::Failed(status)),
            Err(e) => Err(classify(&e, &limits)),
        }
    }

    fn linker(&self, granted: &BTreeSet<Capability>) -> Result<Linker<State>, Termination> {
        let mut linker: Linker<State> = Linker::new(&self.engine);
        let link = |e: wasmtime::Error| Termination::Refused(format!("linking host functions: {e}"));
        if granted.contains(&Capability::ReadInput) {
            linker
                .func_wrap("sovereign", "input_len", |caller: Caller<'_, State>| -> i32 {
                    i32::try_from(caller.data().input.len()).unwrap_or(i32::MAX)
                })
                .map_err(link)?;
            linker
                .func_wrap("sovereign", "input_read", |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
                    let input = caller.data().input.clone();
                    let n = usize::try_from(len).unwrap_or(0).min(input.len());
                    write_guest(&mut caller, ptr, &input[..n]).map_or(-1, |()| n as i32)
                })
                .map_err(link)?;
        }
        if granted.contains(&Capability::WriteOutput) {
            linker
                .func_wrap("sovereign", "output_write", |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
                    let Some(bytes) = read_guest(&mut caller, ptr, len) else { return -1 };
                    let state = caller.data_mut();
                    if state.output.len() + bytes.len() > state.limits.max_output {
                        state.abi_error = Some(format!("output exceeds {} bytes", state.limits.max_output));
                        return -1;
                    }
                    state.output.extend_from_slice(&bytes);
                    0
                })
                .map_err(link)?;
        }
        if granted.contains(&Capability::Log) {
            linker
                .func_wrap("sovereign", "log", |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
                    let Some(bytes) = read_guest(&mut caller, ptr, len) else { return -1 };
                    let state = caller.data_mut();
                    if state.log.len() >= state.limits.max_log_lines {
                        return -1;
                    }
                    let line: String = String::from_utf8_lossy(&bytes).chars().take(1024).collect();
                    state.log.push(line);
                    0
                })
                .map_err(link)?;
        }
        if granted.contains(&Capability::Random) {
            linker
                .func_wrap("sovereign", "random", |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
                    let n = usize::try_from(len).unwrap_or(0).min(4096);
                    let mut bytes = vec![0u8; n];
                    OsRng.fill_bytes(&mut bytes);
                    write_guest(&mut caller, ptr, &bytes).map_or(-1, |()| 0)
                })
                .map_err(link)?;
        }
        if granted.contains(&Capability::Clock) {
            linker
                .func_wrap("sovereign", "clock_ms", |_caller: Caller<'_, State>| -> i64 {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                })
                .map_err(link)?;
        }
        Ok(linker)
    }
}

fn memory(caller: &mut Caller<'_, State>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(|e| e.into_memory())
}

fn read_guest(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        caller.data_mut().abi_error = Some("negative pointer or length".into());
        return None;
    };
    let Some(mem) = memory(caller) else {
        caller.data_mut().abi_error = Some("the module exports no memory".into());
        return None;
    };
    if len > MAX_HOST_CALL_BYTES {
        caller.data_mut().abi_error =
            Some(format!("a host call of {len} bytes exceeds the {MAX_HOST_CALL_BYTES}-byte limit"));
        return None;
    }
    let mut buf = vec![0u8; len];
    if mem.read(&*caller, ptr, &mut buf).is_err() {
        caller.data_mut().abi_error = Some(format!("read of {len} bytes at {ptr} is outside the module's memory"));
        return None;
    }
    Some(buf)
}

fn write_guest(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> Option<()> {
    let Ok(ptr) = usize::try_from(ptr) else {
        caller.data_mut().abi_error = Some("negative pointer".into());
        return None;
    };
    let Some(mem) = memory(caller) else {
        caller.data_mut().abi_error = Some("the module exports no memory".into());
        return None;
    };
    if mem.write(&mut *caller, ptr, bytes).is_err() {
        caller.data_mut().abi_error =
            Some(format!("write of {} bytes at {ptr} is outside the module's memory", bytes.len()));
        return None;
    }
    Some(())
}

fn classify(e: &wasmtime::Error, limits: &Limits) -> Termination {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Termination::FuelExhausted(limits.fuel),
            Trap::Interrupt => Termination::WallClock(limits.wall_ms),
            Trap::StackOverflow => Termination::StackOverflow,
            other => Termination::Trap(other.to_string()),
        };
    }
    let text = format!("{e:#}");
    if text.contains("forcing trap when growing memory") || (text.contains("memory") && text.contains("limit")) {
        return Termination::Memory(limits.memory_bytes);
    }
    if text.contains("unknown import") {
        return Termination::ImportNotGranted(text.lines().next().unwrap_or_default().to_string());
    }
    if text.contains("export") {
        return Termination::Abi(text.lines().next().unwrap_or_default().to_string());
    }
    Termination::Trap(text.lines().next().unwrap_or_default().to_string())
}
