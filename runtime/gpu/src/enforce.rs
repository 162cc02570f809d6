//! Enforcement decisions: from violations to actions (seed 004's severities), pure. The
//! runtime carries the actions out through NVML and the governed-kernel launcher, and audits
//! each with its outcome; what it cannot carry out is audited as not done, never dropped.

use serde::{Deserialize, Serialize};
use sovereign_boot_contract::gpu::GpuSettings;

use crate::reading::Sample;
use crate::validate::{Severity, Violation, ViolationKind};

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Lower a device's power limit (throttling it).
    LowerPowerLimit {
        /// The device's UUID.
        device: String,
        /// Its NVML index.
        index: u32,
        /// The new limit, milliwatts.
        to_mw: u32,
        /// Why.
        because: String,
    },
    /// Stop the workload holding the device (a governed kernel is aborted and refused until
    /// its run is resumed; any other process is reported, the runtime has no right to kill it).
    StopWorkload {
        /// The device's UUID.
        device: String,
        /// The process.
        pid: u32,
        /// Why.
        because: String,
    },
    /// Engage the emergency stop: no new GPU work until it is cleared.
    EmergencyStop {
        /// Why: every critical violation, one line.
        because: String,
    },
}

/// The actions for `violations` of `sample`: one emergency stop for all critical violations,
/// one power-limit change per device at most, one stop per process at most. Deterministic.
pub fn decide(violations: &[Violation], sample: &Sample, limits: &GpuSettings) -> Vec<Action> {
    let mut actions = Vec::new();
    let critical: Vec<&str> =
        violations.iter().filter(|v| v.severity == Severity::Critical).map(|v| v.detail.as_str()).collect();
    if !critical.is_empty() {
        actions.push(Action::EmergencyStop { because: critical.join("; ") });
    }
    for v in violations.iter().filter(|v| v.severity == Severity::High) {
        let reading = sample.devices.iter().find(|d| d.uuid == v.device).map(|d| d.clone().sanitized());
        match &v.kind {
            ViolationKind::Temperature { .. } => {
                let Some(limit) = reading.as_ref().and_then(|r| r.power_limit_mw) else { continue };
                let to_mw = (u64::from(limit) * u64::from(limits.throttle_power_permille) / 1000) as u32;
                let already =
                    actions.iter().any(|a| matches!(a, Action::LowerPowerLimit { device, .. } if *device == v.device));
                if !already {
                    actions.push(Action::LowerPowerLimit {
                        device: v.device.clone(),
                        index: v.index,
                        to_mw,
                        because: v.detail.clone(),
                    });
                }
            }
            ViolationKind::StalledWorkload { pid, .. } => push_stop(&mut actions, &v.device, *pid, &v.detail),
            ViolationKind::MemoryOverLimit { .. } => {
                // The process holding the most memory on the device is the one stopped.
                let biggest = reading
                    .as_ref()
                    .and_then(|r| r.processes.iter().filter_map(|p| p.used_bytes.map(|b| (b, p.pid))).max())
                    .map(|(_, pid)| pid);
                if let Some(pid) = biggest {
                    push_stop(&mut actions, &v.device, pid, &v.detail);
                }
            }
            _ => {}
        }
    }
    actions
}

fn push_stop(actions: &mut Vec<Action>, device: &str, pid: u32, because: &str) {
    if !actions.iter().any(|a| matches!(a, Action::StopWorkload { pid: p, .. } if *p == pid)) {
        actions.push(Action::StopWorkload { device: device.into(), pid, because: because.into() });
    }
}
