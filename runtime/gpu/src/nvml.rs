//! The NVML edge: whether this machine has a GPU (and if not, why not, in words), one sampling
//! pass into a [`Sample`], and the one setting an enforcer changes (the power limit). Every NVML
//! failure becomes data — an absent GPU, an unreadable field — never a panic.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use serde::{Deserialize, Serialize};

use crate::reading::{DeviceReading, ProcessUse, Sample};

/// One device, as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// NVML index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Installed memory, bytes (0 when unreadable).
    pub memory_total: u64,
}

/// Whether the node has a GPU it can govern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// No: why, in words (no driver, no device, NVML failing).
    Absent(String),
    /// Yes: the devices, and the driver version.
    Present {
        /// Driver version, as NVML says it.
        driver: String,
        /// The devices.
        devices: Vec<DeviceSummary>,
    },
}

impl Presence {
    /// One line: `no GPU: <reason>` or `N GPU(s): <names> (driver <v>)`.
    pub fn describe(&self) -> String {
        match self {
            Presence::Absent(reason) => format!("no GPU: {reason}"),
            Presence::Present { driver, devices } => format!(
                "{} GPU(s): {} (driver {driver})",
                devices.len(),
                devices.iter().map(|d| format!("{} {}", d.index, d.name)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// NVML, opened.
pub struct NvmlMonitor {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlMonitor")
    }
}

impl NvmlMonitor {
    /// Opens NVML; with no driver (no `libnvidia-ml.so.1`, no kernel module) or no device, says
    /// which as [`Presence::Absent`].
    pub fn open() -> Result<(Self, Presence), Presence> {
        Self::open_library(None)
    }

    /// [`NvmlMonitor::open`] with NVML loaded from `library` instead of the system's
    /// `libnvidia-ml.so.1` (an image that carries the driver names its copy).
    pub fn open_library(library: Option<&std::ffi::OsStr>) -> Result<(Self, Presence), Presence> {
        let mut builder = Nvml::builder();
        if let Some(path) = library {
            builder.lib_path(path);
        }
        let nvml = builder.init().map_err(|e| {
            Presence::Absent(format!(
                "the NVIDIA driver is not loaded (NVML: {e}; libnvidia-ml.so.1 and the nvidia kernel module are needed)"
            ))
        })?;
        let count = nvml.device_count().map_err(|e| Presence::Absent(format!("NVML cannot count devices: {e}")))?;
        if count == 0 {
            return Err(Presence::Absent("the NVIDIA driver is loaded but reports no device".into()));
        }
        let driver = nvml.sys_driver_version().unwrap_or_else(|e| format!("unknown ({e})"));
        let mut devices = Vec::new();
        for index in 0..count {
            match nvml.device_by_index(index) {
                Ok(d) => devices.push(DeviceSummary {
                    index,
                    uuid: d.uuid().unwrap_or_else(|_| format!("index-{index}")),
                    name: d.name().unwrap_or_else(|_| "unknown".into()),
                    memory_total: d.memory_info().map(|m| m.total).unwrap_or(0),
                }),
                Err(e) => return Err(Presence::Absent(format!("GPU {index} cannot be opened: {e}"))),
            }
        }
        Ok((NvmlMonitor { nvml }, Presence::Present { driver, devices }))
    }

    /// One sampling pass over every device the driver reports now.
    pub fn sample(&self, now_ms: u64) -> Sample {
        let count = self.nvml.device_count().unwrap_or(0);
        let mut devices = Vec::new();
        for index in 0..count {
            let Ok(d) = self.nvml.device_by_index(index) else { continue };
            let mut unreadable = Vec::new();
            let mut get = |what: &str, r: Result<u64, nvml_wrapper::error::NvmlError>| match r {
                Ok(v) => Some(v),
                Err(nvml_wrapper::error::NvmlError::NotSupported) => None,
                Err(e) => {
                    unreadable.push(format!("{what}: {e}"));
                    None
                }
            };
            let memory = d.memory_info().ok();
            let utilization = get("utilization", d.utilization_rates().map(|u| u64::from(u.gpu)));
            let temperature = get("temperature", d.temperature(TemperatureSensor::Gpu).map(u64::from));
            let power = get("power draw", d.power_usage().map(u64::from));
            let power_limit = get("power limit", d.enforced_power_limit().map(u64::from));
            let ecc_uncorrected =
                get("uncorrected ECC", d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile));
            let ecc_corrected = get("corrected ECC", d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile));
            let throttle = get("throttle reasons", d.current_throttle_reasons().map(|t| t.bits()));
            let processes = match d.running_compute_processes() {
                Ok(ps) => ps
                    .into_iter()
                    .map(|p| ProcessUse {
                        pid: p.pid,
                        used_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                    })
                    .collect(),
                Err(e) => {
                    unreadable.push(format!("processes: {e}"));
                    vec![]
                }
            };
            if memory.is_none() {
                unreadable.push("memory: unreadable".into());
            }
            let narrow = |v: Option<u64>| v.map(|x| u32::try_from(x).unwrap_or(u32::MAX));
            devices.push(DeviceReading {
                index,
                uuid: d.uuid().unwrap_or_else(|_| format!("index-{index}")),
                name: d.name().unwrap_or_else(|_| "unknown".into()),
                memory_used: memory.as_ref().map(|m| m.used),
                memory_total: memory.as_ref().map(|m| m.total),
                utilization_pct: narrow(utilization),
                temperature_c: narrow(temperature),
                power_mw: narrow(power),
                power_limit_mw: narrow(power_limit),
                ecc_uncorrected,
                ecc_corrected,
                throttle_reasons: throttle,
                processes,
                unreadable,
            });
        }
        Sample { taken_ms: now_ms, devices }
    }

    /// Sets device `index`'s power limit (needs the driver's permission: the outcome is
    /// returned for the audit log, not assumed).
    pub fn set_power_limit(&self, index: u32, milliwatts: u32) -> Result<(), String> {
        let mut device = self.nvml.device_by_index(index).map_err(|e| format!("GPU {index}: {e}"))?;
        device
            .set_power_management_limit(milliwatts)
            .map_err(|e| format!("GPU {index}: setting the power limit to {milliwatts} mW: {e}"))
    }
}
