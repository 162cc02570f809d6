//! Validators: pure functions from readings (this sample and what the monitor remembers of the
//! ones before) and the signed limits to violations with a severity (seed 004). Nothing here
//! reads a device or a clock.
//!
//! Must never: panic on any reading, or let a reading it cannot judge pass silently — a value
//! the driver could not give is judged as unknown (and the vanished device, the counter that ran
//! backwards, are violations of their own).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sovereign_boot_contract::gpu::GpuSettings;

use crate::reading::{
    DeviceReading, Sample, THROTTLE_HW_POWER_BRAKE, THROTTLE_HW_SLOWDOWN, THROTTLE_HW_THERMAL, THROTTLE_SW_THERMAL,
    throttle_names,
};

/// How bad a violation is, and so what the enforcer does (seed 004): Critical → emergency
/// stop; High → act on the device or workload; Medium → audit an alert; Low → audit only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Noted.
    Low,
    /// Alerted.
    Medium,
    /// Acted on.
    High,
    /// Emergency stop.
    Critical,
}

/// What was violated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ViolationKind {
    /// Memory in use above the limit.
    MemoryOverLimit {
        /// Bytes used.
        used: u64,
        /// Bytes installed.
        total: u64,
    },
    /// Temperature at or above the warning limit.
    Temperature {
        /// °C read.
        celsius: u32,
    },
    /// Power draw above the allowed fraction of the limit.
    PowerOverLimit {
        /// mW drawn.
        draw_mw: u32,
        /// mW enforced limit.
        limit_mw: u32,
    },
    /// Uncorrected ECC errors appeared.
    EccUncorrected {
        /// New errors since the last sample.
        new: u64,
    },
    /// Corrected ECC errors grew faster than allowed.
    EccCorrected {
        /// New errors since the last sample.
        new: u64,
    },
    /// A counter the driver only ever raises went down (a reset device, or a lying reading).
    CounterBackwards {
        /// Which counter.
        counter: String,
        /// Before.
        was: u64,
        /// Now.
        now: u64,
    },
    /// The hardware throttled the device.
    HardwareThrottle {
        /// The throttle reasons set.
        reasons: Vec<String>,
    },
    /// A process has held memory with no utilisation for the configured number of samples.
    StalledWorkload {
        /// Its PID.
        pid: u32,
        /// Samples in a row.
        samples: u32,
    },
    /// A device seen before is gone.
    DeviceVanished,
    /// A device could not be read in full.
    Unreadable {
        /// What could not be read.
        what: Vec<String>,
    },
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The device's UUID.
    pub device: String,
    /// Its NVML index when seen.
    pub index: u32,
    /// What.
    pub kind: ViolationKind,
    /// How bad.
    pub severity: Severity,
    /// One line for the audit log and the operator.
    pub detail: String,
}

/// What the validators remember between samples (per device UUID): the counters last read, how
/// many samples each process has looked stalled, and every device ever seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    devices: BTreeMap<String, Remembered>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    index: u32,
    ecc_uncorrected: Option<u64>,
    ecc_corrected: Option<u64>,
    stalled: BTreeMap<u32, u32>,
    present: bool,
}

/// Judges `sample` against `limits`, given what `history` remembers, and updates `history`.
/// Violations come out in a fixed order: by device as sampled, then vanished devices.
pub fn validate(history: &mut History, sample: &Sample, limits: &GpuSettings) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for raw in &sample.devices {
        let reading = raw.clone().sanitized();
        seen.insert(reading.uuid.clone());
        let remembered = history.devices.entry(reading.uuid.clone()).or_default();
        judge_device(&reading, remembered, limits, &mut out);
        remembered.index = reading.index;
        remembered.present = true;
    }
    for (uuid, remembered) in &mut history.devices {
        if remembered.present && !seen.contains(uuid) {
            remembered.present = false;
            remembered.stalled.clear();
            out.push(Violation {
                device: uuid.clone(),
                index: remembered.index,
                kind: ViolationKind::DeviceVanished,
                severity: Severity::Critical,
                detail: format!("GPU {} ({uuid}) vanished: the driver no longer reports it", remembered.index),
            });
        }
    }
    out
}

fn judge_device(r: &DeviceReading, mem: &mut Remembered, limits: &GpuSettings, out: &mut Vec<Violation>) {
    let mut push = |kind: ViolationKind, severity: Severity, detail: String| {
        out.push(Violation {
            device: r.uuid.clone(),
            index: r.index,
            kind,
            severity,
            detail: format!("GPU {} ({}): {detail}", r.index, r.uuid),
        });
    };
    if !r.unreadable.is_empty() {
        push(
            ViolationKind::Unreadable { what: r.unreadable.clone() },
            Severity::Medium,
            format!("not fully readable: {}", r.unreadable.join("; ")),
        );
    }
    if let (Some(used), Some(total)) = (r.memory_used, r.memory_total)
        && u128::from(used) * 1000 > u128::from(total) * u128::from(limits.max_memory_permille)
    {
        push(
            ViolationKind::MemoryOverLimit { used, total },
            Severity::High,
            format!(
                "memory {used} of {total} bytes in use, above the limit of {}.{}%",
                limits.max_memory_permille / 10,
                limits.max_memory_permille % 10
            ),
        );
    }
    if let Some(c) = r.temperature_c {
        if c >= limits.critical_temperature_c {
            push(
                ViolationKind::Temperature { celsius: c },
                Severity::Critical,
                format!("temperature {c} °C at or above the critical {} °C", limits.critical_temperature_c),
            );
        } else if c >= limits.warn_temperature_c {
            push(
                ViolationKind::Temperature { celsius: c },
                Severity::High,
                format!("temperature {c} °C at or above the limit {} °C", limits.warn_temperature_c),
            );
        }
    }
    if let (Some(draw), Some(limit)) = (r.power_mw, r.power_limit_mw)
        && u64::from(draw) * 1000 > u64::from(limit) * u64::from(limits.max_power_permille)
    {
        push(
            ViolationKind::PowerOverLimit { draw_mw: draw, limit_mw: limit },
            Severity::Medium,
            format!("power draw {draw} mW above {}‰ of the {limit} mW limit", limits.max_power_permille),
        );
    }
    // ECC counters only rise while the driver stays loaded.
    let mut counter = |name: &str, was: Option<u64>, now: Option<u64>| -> Option<u64> {
        match (was, now) {
            (Some(w), Some(n)) if n < w => {
                push(
                    ViolationKind::CounterBackwards { counter: name.into(), was: w, now: n },
                    Severity::High,
                    format!("{name} counter went backwards ({w} → {n}): the device was reset or the reading is false"),
                );
                None
            }
            (Some(w), Some(n)) => Some(n - w),
            (None, Some(n)) => Some(n),
            _ => None,
        }
    };
    let new_uncorrected = counter("uncorrected ECC", mem.ecc_uncorrected, r.ecc_uncorrected);
    let new_corrected = counter("corrected ECC", mem.ecc_corrected, r.ecc_corrected);
    if let Some(new) = new_uncorrected.filter(|n| *n > 0) {
        push(
            ViolationKind::EccUncorrected { new },
            Severity::Critical,
            format!("{new} uncorrected ECC error(s): device memory can no longer be trusted"),
        );
    }
    if let Some(new) = new_corrected.filter(|n| *n > limits.max_corrected_ecc_per_sample) {
        push(
            ViolationKind::EccCorrected { new },
            Severity::High,
            format!("{new} corrected ECC errors since the last sample (limit {})", limits.max_corrected_ecc_per_sample),
        );
    }
    mem.ecc_uncorrected = r.ecc_uncorrected.or(mem.ecc_uncorrected);
    mem.ecc_corrected = r.ecc_corrected.or(mem.ecc_corrected);
    if let Some(mask) = r.throttle_reasons {
        let hardware =
            mask & (THROTTLE_HW_SLOWDOWN | THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL | THROTTLE_HW_POWER_BRAKE);
        if hardware != 0 {
            let reasons: Vec<String> = throttle_names(hardware).into_iter().map(String::from).collect();
            push(
                ViolationKind::HardwareThrottle { reasons: reasons.clone() },
                Severity::Medium,
                format!("throttled by {}", reasons.join(", ")),
            );
        }
    }
    // Stall: a process holds memory while the device does nothing, sample after sample. With
    // the utilisation unknown nothing is counted (neither way).
    let idle = r.utilization_pct.map(|u| u == 0);
    let mut stalled = BTreeMap::new();
    for p in r.processes.iter().filter(|p| p.used_bytes.is_some_and(|b| b > 0)) {
        let before = mem.stalled.get(&p.pid).copied().unwrap_or(0);
        let now = match idle {
            Some(true) => before.saturating_add(1),
            Some(false) => 0,
            None => before,
        };
        if now >= limits.stall_samples && before < limits.stall_samples {
            push(
                ViolationKind::StalledWorkload { pid: p.pid, samples: now },
                Severity::High,
                format!("process {} holds device memory with 0% utilisation for {now} samples", p.pid),
            );
        }
        stalled.insert(p.pid, now);
    }
    mem.stalled = stalled;
}
