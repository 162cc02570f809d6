//! Validators, enforcement decisions and the emergency stop over recorded readings (the shapes
//! NVML gives on an H100 and an A100, sentinels included) — no GPU needed — and the no-GPU path,
//! which every machine takes when NVML cannot load.

use sovereign_boot_contract::gpu::GpuSettings;
use sovereign_gpu::enforce::Action;
use sovereign_gpu::estop::{ClearRefused, Clearance, EmergencyStop};
use sovereign_gpu::kernel::{KernelError, KernelLimits, image_kind, plan};
use sovereign_gpu::reading::{DeviceReading, ProcessUse, Sample};
use sovereign_gpu::validate::{History, Severity, ViolationKind};
use sovereign_gpu::{NvmlMonitor, Presence, decide, validate};

fn recorded(name: &str) -> Sample {
    let path = format!("{}/tests/readings/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).expect("recorded reading")).expect("recorded reading parses")
}

fn h100() -> DeviceReading {
    recorded("h100-busy.json").devices.remove(0)
}

fn sample(devices: Vec<DeviceReading>) -> Sample {
    Sample { taken_ms: 1, devices }
}

/// One table row: a change to the busy H100's reading, and the violations (kind tag, severity)
/// the validators must find in it — nothing more, nothing less.
fn check(what: &str, change: impl Fn(&mut DeviceReading), expected: &[(&str, Severity)]) {
    let mut reading = h100();
    change(&mut reading);
    let mut history = History::default();
    let found = validate(&mut history, &sample(vec![reading]), &GpuSettings::default());
    let got: Vec<(String, Severity)> = found
        .iter()
        .map(|v| (serde_json::to_value(&v.kind).expect("kind")["kind"].as_str().unwrap_or("?").to_string(), v.severity))
        .collect();
    let want: Vec<(String, Severity)> = expected.iter().map(|(k, s)| (k.to_string(), *s)).collect();
    assert_eq!(got, want, "{what}: {found:#?}");
    for v in &found {
        assert!(v.detail.starts_with("GPU 0 (GPU-5e1a3f0c"), "{what}: every line names the device: {}", v.detail);
    }
}

#[test]
fn validators_judge_recorded_readings_by_the_signed_limits() {
    check("a busy H100 within every limit", |_| {}, &[]);
    check("memory above 95 %", |r| r.memory_used = Some(84_000_000_000), &[("memory_over_limit", Severity::High)]);
    check("memory exactly at 95 % is allowed", |r| r.memory_used = Some(85_520_809_984 / 1000 * 950), &[]);
    check("hot", |r| r.temperature_c = Some(85), &[("temperature", Severity::High)]);
    check("critically hot", |r| r.temperature_c = Some(95), &[("temperature", Severity::Critical)]);
    check("power above the limit", |r| r.power_mw = Some(700_001), &[("power_over_limit", Severity::Medium)]);
    check("uncorrected ECC errors", |r| r.ecc_uncorrected = Some(2), &[("ecc_uncorrected", Severity::Critical)]);
    check("corrected ECC burst", |r| r.ecc_corrected = Some(500), &[("ecc_corrected", Severity::High)]);
    check(
        "hardware thermal slowdown",
        |r| r.throttle_reasons = Some(0x40 | 0x01),
        &[("hardware_throttle", Severity::Medium)],
    );
    check("idle and power-cap throttling are not violations", |r| r.throttle_reasons = Some(0x01 | 0x04), &[]);
    check(
        "sentinels are unreadable, not readings",
        |r| {
            r.temperature_c = Some(u32::MAX);
            r.utilization_pct = Some(101);
        },
        &[("unreadable", Severity::Medium)],
    );
    check(
        "more memory used than installed keeps neither",
        |r| r.memory_used = Some(r.memory_total.unwrap_or(0) + 1),
        &[("unreadable", Severity::Medium)],
    );
}

#[test]
fn sentinel_readings_of_a_real_shape_are_reported_and_never_judged_as_values() {
    let mut history = History::default();
    let found = validate(&mut history, &recorded("a100-sentinels.json"), &GpuSettings::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    let ViolationKind::Unreadable { what } = &found[0].kind else { panic!("{found:#?}") };
    let text = what.join("\n");
    for field in ["utilization", "temperature", "power draw", "memory used", "uncorrected ECC", "throttle reasons"] {
        assert!(text.contains(field), "{field} is named unreadable: {text}");
    }
    // No memory, temperature or ECC violation was made up from a sentinel.
    let decided = decide(&found, &recorded("a100-sentinels.json"), &GpuSettings::default());
    assert!(decided.is_empty(), "{decided:?}");
}

#[test]
fn counters_going_backwards_and_vanished_devices_are_violations_over_a_history() {
    let limits = GpuSettings::default();
    let mut history = History::default();
    let mut first = h100();
    first.ecc_corrected = Some(10);
    assert!(validate(&mut history, &sample(vec![first.clone()]), &limits).is_empty());
    let mut reset = first.clone();
    reset.ecc_corrected = Some(4);
    let found = validate(&mut history, &sample(vec![reset]), &limits);
    assert!(
        matches!(&found[..], [v] if matches!(&v.kind, ViolationKind::CounterBackwards { was: 10, now: 4, .. }) && v.severity == Severity::High),
        "{found:#?}"
    );
    // The device disappears: one critical violation, once; it comes back: none.
    let gone = validate(&mut history, &sample(vec![]), &limits);
    assert!(
        matches!(&gone[..], [v] if v.kind == ViolationKind::DeviceVanished && v.severity == Severity::Critical),
        "{gone:#?}"
    );
    assert!(validate(&mut history, &sample(vec![]), &limits).is_empty(), "reported once");
    assert!(
        validate(&mut history, &sample(vec![first]), &limits).iter().all(|v| v.kind != ViolationKind::DeviceVanished)
    );
}

#[test]
fn a_workload_holding_memory_while_the_device_idles_is_stalled_after_the_configured_samples() {
    let limits = GpuSettings { stall_samples: 3, ..GpuSettings::default() };
    let mut idle = h100();
    idle.utilization_pct = Some(0);
    let mut history = History::default();
    let mut stalls = vec![];
    for _ in 0..5 {
        stalls.push(validate(&mut history, &sample(vec![idle.clone()]), &limits));
    }
    let counts: Vec<usize> = stalls.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 0, 1, 0, 0], "reported once, at the third idle sample: {stalls:#?}");
    assert!(matches!(stalls[2][0].kind, ViolationKind::StalledWorkload { pid: 4242, samples: 3 }));
    // Unknown utilisation neither counts nor resets; work resets.
    let mut unknown = idle.clone();
    unknown.utilization_pct = None;
    let mut history = History::default();
    validate(&mut history, &sample(vec![idle.clone()]), &limits);
    validate(&mut history, &sample(vec![unknown]), &limits);
    validate(&mut history, &sample(vec![idle.clone()]), &limits);
    let third = validate(&mut history, &sample(vec![idle.clone()]), &limits);
    assert_eq!(third.len(), 1, "two idle samples, one unknown, one idle: stalled at the third idle one");
    let mut history = History::default();
    let busy = h100();
    for s in [&idle, &idle, &busy, &idle, &idle] {
        assert!(validate(&mut history, &sample(vec![s.clone()]), &limits).is_empty(), "work resets the count");
    }
}

#[test]
fn enforcement_follows_severity_critical_stops_high_acts_medium_only_reports() {
    let limits = GpuSettings::default();
    let mut hot = h100();
    hot.temperature_c = Some(86);
    hot.memory_used = Some(84_000_000_000);
    hot.processes =
        vec![ProcessUse { pid: 1, used_bytes: Some(10) }, ProcessUse { pid: 4242, used_bytes: Some(83_000_000_000) }];
    let s = sample(vec![hot]);
    let found = validate(&mut History::default(), &s, &limits);
    let actions = decide(&found, &s, &limits);
    assert_eq!(
        actions,
        vec![
            Action::StopWorkload {
                device: "GPU-5e1a3f0c-8a2b-4c1d-9e7f-0123456789ab".into(),
                pid: 4242,
                because: found[0].detail.clone(),
            },
            Action::LowerPowerLimit {
                device: "GPU-5e1a3f0c-8a2b-4c1d-9e7f-0123456789ab".into(),
                index: 0,
                to_mw: 560_000,
                because: found[1].detail.clone(),
            },
        ],
        "the process holding the most memory stopped; the power limit lowered to 80 % of 700 W"
    );
    let mut critical = h100();
    critical.temperature_c = Some(99);
    critical.ecc_uncorrected = Some(1);
    critical.power_mw = Some(800_000);
    let s = sample(vec![critical]);
    let found = validate(&mut History::default(), &s, &limits);
    let actions = decide(&found, &s, &limits);
    let [Action::EmergencyStop { because }] = &actions[..] else { panic!("{actions:#?}") };
    assert!(because.contains("99 °C") && because.contains("uncorrected ECC"), "{because}");
    assert!(!because.contains("power draw"), "the medium violation is reported, not acted on: {because}");
}

#[test]
fn the_emergency_stop_clears_only_with_m_distinct_operators_of_the_current_engagement() {
    let mut stop = EmergencyStop::default();
    assert!(stop.permits_work().is_ok());
    assert_eq!(stop.clear([1; 32], 0, 2), Err(ClearRefused::NotEngaged));
    assert!(stop.engage("GPU 0: 99 °C", 10));
    assert!(!stop.engage("GPU 0: 99 °C", 11), "already engaged");
    assert!(!stop.engage("operator: maintenance", 12));
    let refusal = stop.permits_work().expect_err("engaged");
    assert_eq!(
        refusal,
        "GPU emergency stop 1 engaged: GPU 0: 99 °C; operator: maintenance (cleared only by the gpu-operator role)"
    );
    assert_eq!(stop.clear([1; 32], 0, 2), Err(ClearRefused::WrongGeneration { given: 0, current: 1 }));
    assert_eq!(stop.clear([1; 32], 1, 2), Ok(Clearance::Counted { have: 1, need: 2 }));
    assert_eq!(stop.clear([1; 32], 1, 2), Ok(Clearance::Counted { have: 1, need: 2 }), "one operator counts once");
    assert!(stop.engaged());
    assert_eq!(stop.clear([2; 32], 1, 2), Ok(Clearance::Cleared));
    assert!(stop.permits_work().is_ok());
    // A second engagement starts from no clearances, and the old generation does not count.
    assert!(stop.engage("GPU 0 vanished", 20));
    assert_eq!(stop.clear([1; 32], 1, 1), Err(ClearRefused::WrongGeneration { given: 1, current: 2 }));
    assert_eq!(stop.clear([3; 32], 2, 0), Ok(Clearance::Cleared), "a requirement of 0 still needs one");
    // It survives a restart as the runtime keeps it: serialized and read back.
    stop.engage("again", 30);
    let kept: EmergencyStop = serde_json::from_slice(&serde_json::to_vec(&stop).expect("encode")).expect("decode");
    assert!(kept.engaged() && kept.generation == 3);
}

#[test]
fn kernel_launches_are_planned_against_every_budget_before_any_allocation() {
    let node = GpuSettings { kernel_memory_max: 1 << 20, kernel_time_max_ms: 1_000, ..GpuSettings::default() };
    let limits = KernelLimits {
        entry: "scale".into(),
        output_bytes: 4096,
        threads: 256,
        memory_bytes: 8192,
        time_limit_ms: 500,
    };
    let ok = plan(&limits, 4096, &node, 1 << 30).expect("within budget");
    assert_eq!((ok.device_bytes, ok.blocks, ok.threads), (8192, 16, 256));
    let refused = |l: &KernelLimits, input: u64, free: u64| match plan(l, input, &node, free) {
        Err(e) => e.to_string(),
        Ok(p) => panic!("planned {p:?}"),
    };
    assert_eq!(
        refused(&limits, 4097, 1 << 30),
        "over budget: 8193 bytes of device memory (input 4097 + output 4096) over the stage's memory_bytes 8192"
    );
    let big = KernelLimits { memory_bytes: 1 << 30, output_bytes: 1 << 21, ..limits.clone() };
    assert!(refused(&big, 0, 1 << 40).contains("over the node's kernel_memory_max 1048576"));
    assert!(refused(&limits, 10, 4000).contains("the device has 4000 free"));
    assert!(
        refused(&KernelLimits { time_limit_ms: 1_001, ..limits.clone() }, 0, 1 << 30)
            .contains("kernel_time_max_ms 1000")
    );
    assert!(refused(&KernelLimits { threads: 2048, ..limits.clone() }, 0, 1 << 30).contains("threads 2048"));
    assert!(refused(&KernelLimits { entry: "bad name".into(), ..limits.clone() }, 0, 1 << 30).contains("entry point"));
    assert!(refused(&limits, u64::MAX, u64::MAX).contains("overflow"));
    assert_eq!(image_kind(b".version 8.0\n.target sm_80\n"), Ok("ptx"));
    assert_eq!(image_kind(b"\x7fELF\x02\x01"), Ok("cubin"));
    for bad in [&b""[..], b"ptx\0with a NUL", b"\xff\xfe"] {
        assert!(matches!(image_kind(bad), Err(KernelError::BadImage(_))), "{bad:?}");
    }
}

#[test]
fn without_the_driver_library_nvml_says_no_gpu_and_why() {
    let missing = std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1");
    let Err(absent) = NvmlMonitor::open_library(Some(missing)) else {
        panic!("NVML opened from a path that does not exist")
    };
    let line = absent.describe();
    assert!(line.starts_with("no GPU: the NVIDIA driver is not loaded (NVML: "), "{line}");
    assert!(matches!(absent, Presence::Absent(_)));
}

proptest::proptest! {
    #[test]
    fn no_reading_or_sequence_of_readings_panics(
        seq in proptest::collection::vec(proptest::collection::vec((
            0u32..3, proptest::option::of(proptest::num::u64::ANY), proptest::option::of(proptest::num::u64::ANY),
            proptest::option::of(proptest::num::u32::ANY), proptest::option::of(proptest::num::u32::ANY),
            proptest::option::of(proptest::num::u32::ANY), proptest::option::of(proptest::num::u32::ANY),
            proptest::option::of(proptest::num::u64::ANY), proptest::option::of(proptest::num::u64::ANY),
            proptest::option::of(proptest::num::u64::ANY),
        ), 0..3), 1..6),
    ) {
        let limits = GpuSettings { stall_samples: 1, ..GpuSettings::default() };
        let mut history = History::default();
        for devices in seq {
            let devices: Vec<DeviceReading> = devices.into_iter().map(|(i, mu, mt, u, t, p, pl, eu, ec, th)| DeviceReading {
                index: i, uuid: format!("GPU-{i}"), name: "x".into(), memory_used: mu, memory_total: mt,
                utilization_pct: u, temperature_c: t, power_mw: p, power_limit_mw: pl, ecc_uncorrected: eu,
                ecc_corrected: ec, throttle_reasons: th,
                processes: vec![ProcessUse { pid: i, used_bytes: mu }], unreadable: vec![],
            }).collect();
            let s = Sample { taken_ms: 0, devices };
            let found = validate(&mut history, &s, &limits);
            let _ = decide(&found, &s, &limits);
        }
    }
}
