//! The example stage modules written in Rust (`modules/`, built for wasm32-unknown-unknown by
//! `cargo xtask modules`, which `cargo xtask test` runs first) do real work in the sandbox:
//! normalize a CSV dataset, fit a linear model, and three agents vote on it — deterministically,
//! with only the capabilities they are granted.

#![allow(clippy::unwrap_used)] // test code

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use sovereign_sandbox::{Capability, Limits, LoadedModule, ModuleManifest, Sandbox, Termination};

const IO: [Capability; 3] = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module_bytes(name: &str) -> Vec<u8> {
    let path = root().join("build/modules").join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} — build the modules with `cargo xtask modules`", path.display()))
}

fn load(sandbox: &Sandbox, name: &str) -> LoadedModule {
    let release = SigningKey::from_bytes(&[0x42; 32]);
    let bytes = module_bytes(name);
    let manifest = ModuleManifest::sign(name, 1, &bytes, &IO, &release);
    sandbox.load(&bytes, &manifest, &release.verifying_key()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn normalize_train_and_vote_on_the_example_dataset() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let dataset = std::fs::read(root().join("examples/datasets/sensors.csv")).unwrap();
    let limits = Limits::default();

    let normalize = load(&sandbox, "normalize");
    let normalized = sandbox.run(&normalize, &IO, &dataset, limits).unwrap();
    let text = String::from_utf8(normalized.output.clone()).unwrap();
    assert_eq!(text.lines().count(), 25, "header + 24 rows (the bad row dropped):\n{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("0.000000,"), "{text}");
    assert!(text.lines().nth(24).unwrap().starts_with("1.000000,"), "{text}");
    assert_eq!(normalized.log, vec!["normalized 24 rows (x in [10, 67.5])".to_string()]);
    // Replayed on the same input: the same bytes and the same fuel.
    let again = sandbox.run(&normalize, &IO, &dataset, limits).unwrap();
    assert_eq!((again.output_sha256, again.fuel_used), (normalized.output_sha256, normalized.fuel_used));

    let train = load(&sandbox, "train");
    let model = String::from_utf8(sandbox.run(&train, &IO, &normalized.output, limits).unwrap().output).unwrap();
    // y = 2x + 1 with x = 10 + 57.5·x' → slope 115, intercept 21 on the normalized axis.
    let field = |k: &str| -> f64 {
        model.split(',').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok()).unwrap()
    };
    assert!((field("a") - 115.0).abs() < 0.5, "{model}");
    assert!((field("b") - 21.0).abs() < 0.5, "{model}");
    assert!(field("mse") < 0.1, "{model}");

    // The stage's parameters reach the module (the engine's first input line) and change what
    // it fits: through the origin the slope differs and b is 0; an unknown model is refused.
    let with = |params: &str| {
        let mut input = format!("#parameters {params}\n").into_bytes();
        input.extend_from_slice(&normalized.output);
        sandbox.run(&train, &IO, &input, limits)
    };
    let linear = String::from_utf8(with(r#"{"loss":"mse","model":"linear"}"#).unwrap().output).unwrap();
    assert_eq!(linear, model, "the default model is the linear one");
    let proportional = String::from_utf8(with(r#"{"model":"proportional"}"#).unwrap().output).unwrap();
    assert!(proportional.contains("b=0.000000000,") && proportional != model, "{proportional}");
    assert_eq!(with(r#"{"model":"cubic"}"#).unwrap_err(), Termination::Failed(3));

    let agent = load(&sandbox, "agent");
    let vote = |policy: &str| {
        let input = format!("{model}\n{policy}\n");
        String::from_utf8(sandbox.run(&agent, &IO, input.as_bytes(), limits).unwrap().output).unwrap()
    };
    let votes = [vote("max_mse=0.5,min_rows=10"), vote("max_mse=0.1,min_rows=20"), vote("max_mse=0.001,min_rows=10")];
    assert!(votes[0].starts_with("approve"), "{votes:?}");
    assert!(votes[1].starts_with("approve"), "{votes:?}");
    assert!(votes[2].starts_with("reject: mse"), "{votes:?}");
}

#[test]
fn stage_modules_get_only_what_their_stage_grants() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let normalize = load(&sandbox, "normalize");
    // A stage that grants no output capability cannot run a module that writes output.
    let e = sandbox
        .run(&normalize, &[Capability::ReadInput, Capability::Log], b"x,y\n1,2\n", Limits::default())
        .unwrap_err();
    assert!(matches!(&e, Termination::ImportNotGranted(w) if w.contains("write_output")), "{e}");
    // Empty input: the module's own failure status, contained.
    assert_eq!(sandbox.run(&normalize, &IO, b"", Limits::default()).unwrap_err(), Termination::Failed(1));
    // A tampered module is refused before compilation.
    let release = SigningKey::from_bytes(&[0x42; 32]);
    let mut bytes = module_bytes("train");
    let manifest = ModuleManifest::sign("train", 1, &bytes, &IO, &release);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    assert!(matches!(sandbox.load(&bytes, &manifest, &release.verifying_key()), Err(Termination::Refused(_))));
}
