//! Typed GPU readings: what one sample of one device says, with every value that could not be
//! read (or was read as a sentinel) kept as `None` and named — never a made-up zero. Pure.

use serde::{Deserialize, Serialize};

/// NVML's "not available" sentinels, as drivers report them through the C API
/// (`NVML_VALUE_NOT_AVAILABLE` is `-1` as an unsigned: all ones).
pub const SENTINEL_U32: u32 = u32::MAX;
/// The 64-bit form of the same sentinel.
pub const SENTINEL_U64: u64 = u64::MAX;
/// No GPU die reads above this; a higher value is a bad reading, not a hot GPU.
pub const MAX_PLAUSIBLE_TEMPERATURE_C: u32 = 200;

/// One process holding memory on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessUse {
    /// Its PID.
    pub pid: u32,
    /// Device memory it holds, bytes (`None`: the driver could not say).
    pub used_bytes: Option<u64>,
}

/// One device's reading, as the monitor took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReading {
    /// NVML index.
    pub index: u32,
    /// The device's UUID (`GPU-…`): what identifies it across samples.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Device memory in use, bytes.
    pub memory_used: Option<u64>,
    /// Device memory installed, bytes.
    pub memory_total: Option<u64>,
    /// Percent of the last period a kernel ran (0–100).
    pub utilization_pct: Option<u32>,
    /// Die temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power draw, milliwatts.
    pub power_mw: Option<u32>,
    /// The power limit the driver enforces, milliwatts.
    pub power_limit_mw: Option<u32>,
    /// Uncorrected ECC errors since the driver loaded (volatile counter).
    pub ecc_uncorrected: Option<u64>,
    /// Corrected ECC errors since the driver loaded.
    pub ecc_corrected: Option<u64>,
    /// NVML's clock throttle reasons bit mask.
    pub throttle_reasons: Option<u64>,
    /// Compute processes on it.
    pub processes: Vec<ProcessUse>,
    /// What could not be read, one line each (the NVML call and its error).
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// Everything one sampling pass saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// When, ms since the Unix epoch.
    pub taken_ms: u64,
    /// The devices, by index.
    pub devices: Vec<DeviceReading>,
}

/// Throttle reasons an operator must hear about (NVML's bits): slowdowns the hardware forced.
pub const THROTTLE_HW_SLOWDOWN: u64 = 0x08;
/// The driver lowered clocks because the die is too hot.
pub const THROTTLE_SW_THERMAL: u64 = 0x20;
/// The hardware lowered clocks because the die is too hot.
pub const THROTTLE_HW_THERMAL: u64 = 0x40;
/// The board's power brake asserted.
pub const THROTTLE_HW_POWER_BRAKE: u64 = 0x80;

/// Names of the throttle bits set in `mask`, for an audit line.
pub fn throttle_names(mask: u64) -> Vec<&'static str> {
    const NAMES: [(u64, &str); 10] = [
        (0x01, "gpu_idle"),
        (0x02, "applications_clocks"),
        (0x04, "sw_power_cap"),
        (THROTTLE_HW_SLOWDOWN, "hw_slowdown"),
        (0x10, "sync_boost"),
        (THROTTLE_SW_THERMAL, "sw_thermal"),
        (THROTTLE_HW_THERMAL, "hw_thermal"),
        (THROTTLE_HW_POWER_BRAKE, "hw_power_brake"),
        (0x100, "display_clocks"),
        (0x200, "user_defined_clocks"),
    ];
    NAMES.iter().filter(|(bit, _)| mask & bit != 0).map(|(_, n)| *n).collect()
}

impl DeviceReading {
    /// Applies the plausibility rules every reading passes before a validator sees it: a
    /// sentinel or an impossible value becomes `None` with a line in `unreadable` saying what
    /// was read. Readings that contradict each other (more memory used than installed) keep
    /// neither.
    pub fn sanitized(mut self) -> Self {
        fn drop_u32(v: &mut Option<u32>, bad: impl Fn(u32) -> bool, what: &str, notes: &mut Vec<String>) {
            if let Some(x) = *v
                && bad(x)
            {
                notes.push(format!("{what}: implausible reading {x}"));
                *v = None;
            }
        }
        fn drop_u64(v: &mut Option<u64>, what: &str, notes: &mut Vec<String>) {
            if *v == Some(SENTINEL_U64) {
                notes.push(format!("{what}: driver reported 'not available'"));
                *v = None;
            }
        }
        let notes = &mut self.unreadable;
        drop_u32(&mut self.utilization_pct, |x| x > 100, "utilization", notes);
        drop_u32(&mut self.temperature_c, |x| x > MAX_PLAUSIBLE_TEMPERATURE_C, "temperature", notes);
        drop_u32(&mut self.power_mw, |x| x == SENTINEL_U32, "power draw", notes);
        drop_u32(&mut self.power_limit_mw, |x| x == SENTINEL_U32 || x == 0, "power limit", notes);
        drop_u64(&mut self.memory_used, "memory used", notes);
        drop_u64(&mut self.memory_total, "memory total", notes);
        drop_u64(&mut self.ecc_uncorrected, "uncorrected ECC errors", notes);
        drop_u64(&mut self.ecc_corrected, "corrected ECC errors", notes);
        if self.memory_total == Some(0) {
            notes.push("memory total: implausible reading 0".into());
            self.memory_total = None;
        }
        if let (Some(used), Some(total)) = (self.memory_used, self.memory_total)
            && used > total
        {
            notes.push(format!("memory: {used} bytes used of {total} installed"));
            self.memory_used = None;
            self.memory_total = None;
        }
        for p in &mut self.processes {
            if p.used_bytes == Some(SENTINEL_U64) {
                p.used_bytes = None;
            }
        }
        self
    }

    /// Memory used as a fraction of installed, when both are known.
    pub fn memory_fraction(&self) -> Option<f64> {
        match (self.memory_used, self.memory_total) {
            (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
            _ => None,
        }
    }
}
