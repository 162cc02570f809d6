//! The GPU limits in a node's signed runtime configuration: what the GPU governance's validators
//! judge readings against, what its enforcers may do, and who clears an emergency stop. Absent
//! from the configuration, the node still monitors (when it has a GPU) under [`GpuSettings::default`].

use serde::{Deserialize, Serialize};

/// The limits and the emergency-stop rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuSettings {
    /// How often the monitor samples, milliseconds (at least 100).
    pub sample_interval_ms: u64,
    /// Device memory in use above this many thousandths of installed is a violation (High).
    pub max_memory_permille: u32,
    /// Temperature at or above this is a violation (High: the power limit is lowered).
    pub warn_temperature_c: u32,
    /// Temperature at or above this is a Critical violation (emergency stop).
    pub critical_temperature_c: u32,
    /// Power draw above this many thousandths of the enforced limit is a violation (Medium).
    pub max_power_permille: u32,
    /// When the enforcer lowers the power limit, to this many thousandths of the current one.
    pub throttle_power_permille: u32,
    /// Any increase of the uncorrected ECC counter is Critical; corrected errors that grow by
    /// more than this between samples are High.
    pub max_corrected_ecc_per_sample: u64,
    /// A process holding device memory with 0 % utilisation for this many samples in a row is
    /// a stalled workload (High: it is stopped when it is a governed kernel).
    pub stall_samples: u32,
    /// The most device memory one governed kernel may ask for, bytes.
    pub kernel_memory_max: u64,
    /// The longest a governed kernel may run, milliseconds.
    pub kernel_time_max_ms: u64,
    /// How many distinct holders of the `gpu-operator` role must approve clearing an emergency
    /// stop (M of however many hold it; at least 1).
    pub clear_approvals: u32,
}

impl Default for GpuSettings {
    fn default() -> Self {
        GpuSettings {
            sample_interval_ms: 1_000,
            max_memory_permille: 950,
            warn_temperature_c: 83,
            critical_temperature_c: 92,
            max_power_permille: 1_000,
            throttle_power_permille: 800,
            max_corrected_ecc_per_sample: 100,
            stall_samples: 30,
            kernel_memory_max: 1 << 30,
            kernel_time_max_ms: 10_000,
            clear_approvals: 1,
        }
    }
}

impl GpuSettings {
    /// Refuses settings that cannot be meant: the one thing wrong.
    pub fn validate(&self) -> Result<(), String> {
        let permille = |v: u32, what: &str, max: u32| {
            if v > 0 && v <= max { Ok(()) } else { Err(format!("gpu.{what} must be 1 to {max}, not {v}")) }
        };
        permille(self.max_memory_permille, "max_memory_permille", 1_000)?;
        permille(self.max_power_permille, "max_power_permille", 1_500)?;
        permille(self.throttle_power_permille, "throttle_power_permille", 1_000)?;
        if self.sample_interval_ms < 100 {
            return Err(format!("gpu.sample_interval_ms must be at least 100, not {}", self.sample_interval_ms));
        }
        if self.warn_temperature_c >= self.critical_temperature_c {
            return Err(format!(
                "gpu.warn_temperature_c ({}) must be below gpu.critical_temperature_c ({})",
                self.warn_temperature_c, self.critical_temperature_c
            ));
        }
        if self.stall_samples == 0 || self.clear_approvals == 0 || self.kernel_time_max_ms == 0 {
            return Err("gpu.stall_samples, gpu.clear_approvals and gpu.kernel_time_max_ms must be at least 1".into());
        }
        Ok(())
    }
}
