//! GPU governance on the appliance (the IO edge around `sovereign-gpu`'s pure core): the
//! node's GPUs found or not (`no GPU: <reason>`), the monitor's pass (sample → validators →
//! enforcement decisions → actions carried out and audited, with their outcome), the emergency
//! stop kept durably in the encrypted store, and governed kernel launches refused by name while
//! there is no GPU or the stop is engaged.
//!
//! Must never: let GPU work start while the emergency stop is engaged or its record cannot be
//! read (a record missing after the first start is read as engaged); report a GPU it did not
//! find; drop a violation or an action without an audit entry.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use sovereign_audit::store::AuditLog;
use sovereign_audit::{Entry, EntryKind, Severity as AuditSeverity};
use sovereign_boot_contract::gpu::GpuSettings;
use sovereign_canonical::now_ms;
use sovereign_gpu::estop::Clearance;
use sovereign_gpu::kernel::{KernelError, KernelLimits, Launched, Launcher};
use sovereign_gpu::validate::Severity;
use sovereign_gpu::{Action, EmergencyStop, History, NvmlMonitor, Presence, Sample, decide, validate};
use sovereign_protocol::pipeline::{GpuDevice, GpuState};

use crate::store::Store;

const STOP_RECORD: &str = "gpu-emergency-stop";
const STARTED_RECORD: &str = "gpu-governance-started";

/// What the metrics report about the GPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuCounters {
    /// Violations, by (kind, severity).
    pub violations: BTreeMap<(String, String), u64>,
    /// Enforcement actions, by (action, outcome: `done`/`failed`).
    pub actions: BTreeMap<(String, String), u64>,
    /// Governed kernel launches, by outcome (`completed`, `refused`, `failed`, `time_limit`).
    pub kernels: BTreeMap<String, u64>,
}

struct Shared {
    stop: EmergencyStop,
    /// Why the stop's record could not be read: GPU work is refused with it.
    stop_unreadable: Option<String>,
    history: History,
    last: Option<Sample>,
    last_violations: Vec<String>,
    counters: GpuCounters,
    launcher: Option<Result<Arc<Launcher>, String>>,
}

/// The node's GPU governance.
pub struct GpuRuntime {
    settings: GpuSettings,
    presence: Presence,
    monitor: Option<NvmlMonitor>,
    store: Store,
    audit: Arc<AuditLog>,
    shared: Mutex<Shared>,
}

impl std::fmt::Debug for GpuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRuntime").field("presence", &self.presence).finish_non_exhaustive()
    }
}

impl GpuRuntime {
    /// Finds the GPUs (NVML from `nvml_library`, or the system's) and reads the emergency stop
    /// kept in `store`.
    pub fn open(
        settings: GpuSettings,
        nvml_library: Option<&OsStr>,
        store: Store,
        audit: Arc<AuditLog>,
    ) -> Result<Self, String> {
        settings.validate()?;
        let (monitor, presence) = match NvmlMonitor::open_library(nvml_library) {
            Ok((m, p)) => (Some(m), p),
            Err(absent) => (None, absent),
        };
        let (stop, stop_unreadable) = match store.get_record(STOP_RECORD) {
            Ok(Some(bytes)) => match serde_json::from_slice::<EmergencyStop>(&bytes) {
                Ok(stop) => (stop, None),
                Err(e) => (EmergencyStop::default(), Some(format!("the emergency stop's record is unreadable ({e})"))),
            },
            Ok(None) => match store.get_record(STARTED_RECORD) {
                Ok(None) => (EmergencyStop::default(), None),
                _ => (
                    EmergencyStop::default(),
                    Some("the emergency stop's record is missing from a node that kept one: read as engaged".into()),
                ),
            },
            Err(e) => (EmergencyStop::default(), Some(format!("the emergency stop's record cannot be read ({e})"))),
        };
        let runtime = GpuRuntime {
            settings,
            presence,
            monitor,
            store,
            audit,
            shared: Mutex::new(Shared {
                stop,
                stop_unreadable,
                history: History::default(),
                last: None,
                last_violations: vec![],
                counters: GpuCounters::default(),
                launcher: None,
            }),
        };
        if runtime.lock().stop_unreadable.is_none() {
            runtime.store.put_record(STARTED_RECORD, b"1").map_err(|e| format!("GPU governance record: {e}"))?;
            runtime.keep_stop(&runtime.lock().stop)?;
        }
        Ok(runtime)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep_stop(&self, stop: &EmergencyStop) -> Result<(), String> {
        let bytes = serde_json::to_vec(stop).map_err(|e| e.to_string())?;
        self.store.put_record(STOP_RECORD, &bytes).map_err(|e| format!("keeping the emergency stop: {e}"))
    }

    fn audit(&self, severity: AuditSeverity, line: String) -> Result<(), String> {
        self.audit
            .append_entry(Entry::new(EntryKind::Gpu, now_ms(), severity, vec![], line.into_bytes()))
            .map(|_| ())
            .map_err(|e| format!("audit log: {e}"))
    }

    /// The signed limits in force.
    pub fn settings(&self) -> &GpuSettings {
        &self.settings
    }

    /// Whether there is a GPU to govern.
    pub fn available(&self) -> bool {
        matches!(self.presence, Presence::Present { .. })
    }

    /// One line for `status`: `no GPU: <reason>`, or the devices — with the emergency stop
    /// when it is engaged.
    pub fn describe(&self) -> String {
        let presence = self.presence.describe();
        match self.permits_work_inner(&self.lock()) {
            Ok(()) => presence,
            Err(stop) => format!("{presence}; {stop}"),
        }
    }

    fn permits_work_inner(&self, shared: &Shared) -> Result<(), String> {
        if let Some(why) = &shared.stop_unreadable {
            return Err(format!("GPU work refused: {why}"));
        }
        shared.stop.permits_work()
    }

    /// `Ok` when a governed kernel may start now; otherwise why not, one line (`no GPU: …`, or
    /// the emergency stop).
    pub fn permits_work(&self) -> Result<(), String> {
        if let Presence::Absent(_) = &self.presence {
            return Err(self.presence.describe());
        }
        self.permits_work_inner(&self.lock())
    }

    /// The facts a GPU-requiring policy judges (`input_signal`): `gpu_available`,
    /// `gpu_status` (the status line), `gpu_emergency_stop` and, when stopped, `gpu_stop_reason`.
    pub fn signals(&self) -> BTreeMap<String, serde_json::Value> {
        let mut s = BTreeMap::new();
        s.insert("gpu_available".into(), serde_json::json!(self.available()));
        s.insert("gpu_status".into(), serde_json::json!(self.presence.describe()));
        let shared = self.lock();
        let stop = self.permits_work_inner(&shared);
        s.insert("gpu_emergency_stop".into(), serde_json::json!(stop.is_err()));
        if let Err(why) = stop {
            s.insert("gpu_stop_reason".into(), serde_json::json!(why));
        }
        s
    }

    /// Engages the emergency stop for `reason`, durably, audited.
    pub fn engage(&self, reason: &str) -> Result<GpuState, String> {
        let mut reason = reason.replace(['\n', '\r'], " ");
        reason.truncate(512);
        let mut shared = self.lock();
        let mut stop = shared.stop.clone();
        let newly = stop.engage(&reason, now_ms());
        self.keep_stop(&stop)?;
        shared.stop = stop;
        let line = if newly {
            format!("GPU emergency stop {} engaged: {reason}", shared.stop.generation)
        } else {
            format!("GPU emergency stop {} (already engaged): also {reason}", shared.stop.generation)
        };
        drop(shared);
        self.audit(AuditSeverity::Critical, line)?;
        Ok(self.state())
    }

    /// Counts clearances by `operators` (verified by the caller: signatures, role, threshold)
    /// of engagement `generation`; durably, audited.
    pub fn clear(&self, operators: &[[u8; 32]], generation: u64) -> Result<GpuState, String> {
        let mut shared = self.lock();
        if shared.stop_unreadable.is_some() {
            // The operators' clearance replaces the unreadable record with a cleared one.
            shared.stop_unreadable = None;
            shared.stop = EmergencyStop::default();
        } else {
            let mut stop = shared.stop.clone();
            let mut outcome = None;
            for op in operators {
                let counted =
                    stop.clear(*op, generation, self.settings.clear_approvals as usize).map_err(|e| e.to_string())?;
                let cleared = counted == Clearance::Cleared;
                outcome = Some(counted);
                if cleared {
                    break;
                }
            }
            if outcome != Some(Clearance::Cleared) {
                return Err(format!(
                    "the emergency stop needs {} distinct gpu-operator clearances, {} given",
                    self.settings.clear_approvals,
                    operators.len()
                ));
            }
            shared.stop = stop;
        }
        self.keep_stop(&shared.stop)?;
        self.store.put_record(STARTED_RECORD, b"1").map_err(|e| format!("GPU governance record: {e}"))?;
        drop(shared);
        let by: Vec<String> = operators.iter().map(hex::encode).collect();
        self.audit(AuditSeverity::Notice, format!("GPU emergency stop {generation} cleared by {}", by.join(", ")))?;
        Ok(self.state())
    }

    /// The engagement a clearance must name now.
    pub fn generation(&self) -> u64 {
        self.lock().stop.generation
    }

    /// One monitor pass: sample every device, judge, decide, act, audit. Returns the audited
    /// lines. Nothing to do without a GPU.
    pub fn tick(&self) -> Result<Vec<String>, String> {
        let Some(monitor) = &self.monitor else { return Ok(vec![]) };
        let sample = monitor.sample(now_ms());
        let mut shared = self.lock();
        let violations = validate(&mut shared.history, &sample, &self.settings);
        let actions = decide(&violations, &sample, &self.settings);
        shared.last_violations = violations.iter().map(|v| v.detail.clone()).collect();
        for v in &violations {
            let kind = serde_json::to_value(&v.kind).ok().and_then(|k| k["kind"].as_str().map(String::from));
            *shared
                .counters
                .violations
                .entry((kind.unwrap_or_default(), severity_name(v.severity).into()))
                .or_default() += 1;
        }
        shared.last = Some(sample);
        drop(shared);
        let mut lines = Vec::new();
        for v in &violations {
            let severity = match v.severity {
                Severity::Critical => AuditSeverity::Critical,
                Severity::High => AuditSeverity::Warning,
                Severity::Medium | Severity::Low => AuditSeverity::Notice,
            };
            let line = format!("GPU violation ({}): {}", severity_name(v.severity), v.detail);
            self.audit(severity, line.clone())?;
            lines.push(line);
        }
        for action in actions {
            let (name, outcome) = match &action {
                Action::EmergencyStop { because } => {
                    ("emergency_stop", self.engage(because).map(|_| "engaged".to_string()))
                }
                Action::LowerPowerLimit { index, to_mw, because, .. } => (
                    "lower_power_limit",
                    monitor
                        .set_power_limit(*index, *to_mw)
                        .map(|()| format!("GPU {index} power limit set to {to_mw} mW ({because})")),
                ),
                Action::StopWorkload { pid, because, .. } => {
                    // The runtime's own kernels end at their wall-clock limit; a process that
                    // is not this runtime has no place on the appliance's GPU: the stop is
                    // engaged so that no governed work shares the device with it.
                    let ours = *pid == std::process::id();
                    let why = if ours {
                        format!("a governed kernel of this runtime ({because}); no new kernel until cleared")
                    } else {
                        format!("process {pid} is not this runtime's ({because})")
                    };
                    ("stop_workload", self.engage(&format!("stop workload: {why}")).map(|_| why))
                }
            };
            let (label, severity, line) = match outcome {
                Ok(done) => ("done", AuditSeverity::Warning, format!("GPU enforcement {name}: done: {done}")),
                Err(e) => ("failed", AuditSeverity::Critical, format!("GPU enforcement {name}: NOT done: {e}")),
            };
            *self.lock().counters.actions.entry((name.into(), label.into())).or_default() += 1;
            self.audit(severity, line.clone())?;
            lines.push(line);
        }
        Ok(lines)
    }

    /// Launches a governed kernel (its image verified by the caller) under the node's limits:
    /// refused by name without a GPU or with the stop engaged; a kernel that runs past its time
    /// limit engages the stop (it may still hold the device). Audited either way.
    pub fn launch(&self, what: &str, image: &[u8], limits: &KernelLimits, input: &[u8]) -> Result<Launched, String> {
        let outcome = self.permits_work().and_then(|()| {
            let launcher = self.launcher()?;
            launcher.run(image, limits, input, &self.settings).map_err(|e| {
                if let KernelError::TimeLimit(_) = e {
                    let _ = self.engage(&format!("{what}: {e}"));
                }
                format!("{what}: {e}")
            })
        });
        let label = match &outcome {
            Ok(_) => "completed",
            Err(e) if e.contains("ran past") => "time_limit",
            Err(e) if e.contains("over budget") || e.starts_with("no GPU") || e.contains("emergency stop") => "refused",
            Err(_) => "failed",
        };
        *self.lock().counters.kernels.entry(label.into()).or_default() += 1;
        let line = match &outcome {
            Ok(l) => format!("{what}: launched, {} output bytes in {} µs", l.output.len(), l.micros),
            Err(e) => format!("{what}: not completed: {e}"),
        };
        let severity = if outcome.is_ok() { AuditSeverity::Info } else { AuditSeverity::Warning };
        self.audit(severity, line)?;
        outcome
    }

    fn launcher(&self) -> Result<Arc<Launcher>, String> {
        let mut shared = self.lock();
        if shared.launcher.is_none() {
            shared.launcher = Some(Launcher::open(0).map(Arc::new).map_err(|e| e.to_string()));
        }
        shared.launcher.clone().unwrap_or_else(|| Err("no launcher".into()))
    }

    /// The state an operator sees.
    pub fn state(&self) -> GpuState {
        let shared = self.lock();
        let devices = shared
            .last
            .as_ref()
            .map(|s| {
                s.devices
                    .iter()
                    .map(|d| {
                        let d = d.clone().sanitized();
                        GpuDevice {
                            index: d.index,
                            uuid: d.uuid,
                            name: d.name,
                            memory_used: d.memory_used,
                            memory_total: d.memory_total,
                            utilization_pct: d.utilization_pct,
                            temperature_c: d.temperature_c,
                            power_mw: d.power_mw,
                            power_limit_mw: d.power_limit_mw,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        GpuState {
            available: self.available(),
            status: self.presence.describe(),
            devices,
            emergency_stop: self.permits_work_inner(&shared).err(),
            generation: shared.stop.generation,
            clear_approvals: self.settings.clear_approvals,
            violations: shared.last_violations.clone(),
        }
    }

    /// The counters, for the metrics.
    pub fn counters(&self) -> GpuCounters {
        self.lock().counters.clone()
    }

    /// Whether `path` (a state directory) has GPU records (the store lives at `<state>/gpu`).
    pub fn store_dir(state_dir: &Path) -> std::path::PathBuf {
        state_dir.join("gpu")
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}
