//! The runtime's metrics in the Prometheus text exposition format (0.0.4), answered to
//! admitted operators over the control API (and through it over the mesh) — never on a port of
//! its own. [`Exposition`] writes the format (pure); [`Observed`] is what the parts of the
//! runtime count, gathered when the request comes.
//!
//! Must never: open a listening socket; report a value it did not read (a part that is not
//! running is absent from the output, not zero).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sovereign_audit::store::AuditLog;
use sovereign_pipeline::engine::EngineCounters;
use sovereign_pipeline::gpu::GpuRuntime;

/// What the runtime's parts count, wired up as each starts.
#[derive(Default)]
pub struct Observed {
    /// Attestation requests answered with evidence.
    pub attestations_ok: AtomicU64,
    /// Attestation requests the TPM could not answer.
    pub attestations_failed: AtomicU64,
    /// The audit log (once the engine opened it).
    pub audit: OnceLock<Arc<AuditLog>>,
    /// The engine's counters.
    pub engine: OnceLock<Arc<EngineCounters>>,
    /// GPU governance.
    pub gpu: OnceLock<Arc<GpuRuntime>>,
    /// Peers the mesh has admitted now (when the mesh runs).
    pub mesh_admitted: OnceLock<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl Observed {
    /// Watches what `engine` counts: its audit log, its sandbox, its GPU governance.
    pub fn watch_engine(&self, engine: &sovereign_pipeline::Engine) {
        let _ = self.audit.set(engine.audit().clone());
        let _ = self.engine.set(engine.counters().clone());
        let _ = self.gpu.set(engine.gpu().clone());
    }
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

/// One metric family being written.
pub struct Exposition {
    text: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition { text: String::new() }
    }

    /// Starts a family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
            let _ = write!(self.text, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// Everything observed now, as the exposition text.
pub fn render(node: &crate::control::Node) -> String {
    let observed = &node.observed;
    let mut e = Exposition::new();
    e.family(
        "sovereign_runtime_info",
        "gauge",
        "The runtime answering: its image version and whether it refuses governed actions.",
    )
    .sample(
        "sovereign_runtime_info",
        &[("version", &node.version.to_string()), ("refusing", if node.refused.is_some() { "true" } else { "false" })],
        1.0,
    );
    e.family("sovereign_attestations_total", "counter", "Attestation requests answered, by outcome.")
        .sample(
            "sovereign_attestations_total",
            &[("outcome", "evidence")],
            observed.attestations_ok.load(Ordering::Relaxed) as f64,
        )
        .sample(
            "sovereign_attestations_total",
            &[("outcome", "failed")],
            observed.attestations_failed.load(Ordering::Relaxed) as f64,
        );
    if let Some(audit) = observed.audit.get() {
        let stats = audit.stats();
        e.family(
            "sovereign_governed_decisions_total",
            "counter",
            "Policy decisions the audit log recorded since the runtime started, by verdict and policy.",
        );
        for ((verdict, policy), n) in &stats.decisions {
            e.sample("sovereign_governed_decisions_total", &[("verdict", verdict), ("policy", policy)], *n as f64);
        }
        e.family(
            "sovereign_audit_entries_total",
            "counter",
            "Audit entries appended since the runtime started, by kind.",
        );
        for (kind, n) in &stats.by_kind {
            e.sample("sovereign_audit_entries_total", &[("kind", kind)], *n as f64);
        }
        e.family("sovereign_audit_log_entries", "gauge", "Durable entries in the audit log.").sample(
            "sovereign_audit_log_entries",
            &[],
            audit.size() as f64,
        );
        if let Ok(meta) = std::fs::metadata(audit.path()) {
            e.family("sovereign_audit_log_bytes", "gauge", "Size of the audit log file, bytes.").sample(
                "sovereign_audit_log_bytes",
                &[],
                meta.len() as f64,
            );
        }
        e.family(
            "sovereign_audit_append_seconds",
            "histogram",
            "Time from an append to its entries being durable (a batch counts once).",
        );
        for (bound, n) in sovereign_audit::stats::LATENCY_BOUNDS_S.iter().zip(&stats.latency_cumulative) {
            e.sample("sovereign_audit_append_seconds_bucket", &[("le", &number(*bound))], *n as f64);
        }
        e.sample("sovereign_audit_append_seconds_bucket", &[("le", "+Inf")], stats.latency_count as f64)
            .sample("sovereign_audit_append_seconds_sum", &[], stats.latency_sum_us as f64 / 1e6)
            .sample("sovereign_audit_append_seconds_count", &[], stats.latency_count as f64);
    }
    if let Some(engine) = observed.engine.get() {
        e.family("sovereign_sandbox_terminations_total", "counter", "WASM stages the sandbox terminated, by kind.");
        let counted = engine.terminations();
        for kind in ["fuel", "wall_clock", "memory", "stack", "trap", "abi", "failed", "refused", "import_not_granted"]
        {
            e.sample(
                "sovereign_sandbox_terminations_total",
                &[("kind", kind)],
                *counted.get(kind).unwrap_or(&0) as f64,
            );
        }
    }
    if let Some(peers) = observed.mesh_admitted.get() {
        e.family("sovereign_mesh_peers", "gauge", "Mesh peers admitted now (their TPM quote verified).").sample(
            "sovereign_mesh_peers",
            &[("state", "admitted")],
            peers() as f64,
        );
    }
    if let Some(gpu) = observed.gpu.get() {
        gpu_families(&mut e, gpu);
    }
    e.finish()
}

fn gpu_families(e: &mut Exposition, gpu: &GpuRuntime) {
    let state = gpu.state();
    e.family(
        "sovereign_gpu_available",
        "gauge",
        "1 when the node has a GPU it governs; 0: no GPU (the reason is in status).",
    )
    .sample("sovereign_gpu_available", &[], if state.available { 1.0 } else { 0.0 });
    e.family("sovereign_gpu_emergency_stop", "gauge", "1 while the GPU emergency stop is engaged.").sample(
        "sovereign_gpu_emergency_stop",
        &[],
        if state.emergency_stop.is_some() { 1.0 } else { 0.0 },
    );
    type Gauge = fn(&sovereign_protocol::pipeline::GpuDevice) -> Option<f64>;
    let gauges: [(&str, &str, Gauge); 6] = [
        ("sovereign_gpu_memory_used_bytes", "Device memory in use, bytes.", |d| d.memory_used.map(|v| v as f64)),
        ("sovereign_gpu_memory_total_bytes", "Device memory installed, bytes.", |d| d.memory_total.map(|v| v as f64)),
        ("sovereign_gpu_utilization_ratio", "Fraction of the last period a kernel ran.", |d| {
            d.utilization_pct.map(|v| f64::from(v) / 100.0)
        }),
        ("sovereign_gpu_temperature_celsius", "Die temperature.", |d| d.temperature_c.map(f64::from)),
        ("sovereign_gpu_power_watts", "Power draw.", |d| d.power_mw.map(|v| f64::from(v) / 1000.0)),
        ("sovereign_gpu_power_limit_watts", "The power limit the driver enforces.", |d| {
            d.power_limit_mw.map(|v| f64::from(v) / 1000.0)
        }),
    ];
    for (name, help, read) in gauges {
        e.family(name, "gauge", help);
        for d in &state.devices {
            if let Some(v) = read(d) {
                e.sample(name, &[("gpu", &d.index.to_string()), ("uuid", &d.uuid)], v);
            }
        }
    }
    let counters = gpu.counters();
    e.family("sovereign_gpu_violations_total", "counter", "GPU violations the validators found, by kind and severity.");
    for ((kind, severity), n) in &counters.violations {
        e.sample("sovereign_gpu_violations_total", &[("kind", kind), ("severity", severity)], *n as f64);
    }
    e.family("sovereign_gpu_enforcements_total", "counter", "GPU enforcement actions, by action and outcome.");
    for ((action, outcome), n) in &counters.actions {
        e.sample("sovereign_gpu_enforcements_total", &[("action", action), ("outcome", outcome)], *n as f64);
    }
    e.family("sovereign_gpu_kernel_launches_total", "counter", "Governed GPU kernel launches, by outcome.");
    let mut kernels: BTreeMap<&str, u64> =
        ["completed", "refused", "failed", "time_limit"].into_iter().map(|k| (k, 0)).collect();
    for (k, n) in &counters.kernels {
        if let Some(slot) = kernels.get_mut(k.as_str()) {
            *slot = *n;
        }
    }
    for (outcome, n) in kernels {
        e.sample("sovereign_gpu_kernel_launches_total", &[("outcome", outcome)], n as f64);
    }
}
