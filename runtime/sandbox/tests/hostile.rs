//! Hostile and broken modules are contained: each ends as a named termination, and the same
//! sandbox keeps running good modules afterwards. Modules are written in WAT and signed like
//! real ones.

#![allow(clippy::unwrap_used)] // test code

use ed25519_dalek::SigningKey;
use sovereign_sandbox::{Capability, Limits, ModuleManifest, Sandbox, Termination};

fn release() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

/// Reverses its input into its output and logs one line.
const REVERSE: &str = r#"(module
  (import "sovereign" "input_len" (func $len (result i32)))
  (import "sovereign" "input_read" (func $read (param i32 i32) (result i32)))
  (import "sovereign" "output_write" (func $write (param i32 i32) (result i32)))
  (import "sovereign" "log" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 60000) "reversing")
  (func (export "run") (result i32)
    (local $n i32) (local $i i32)
    (local.set $n (call $len))
    (drop (call $read (i32.const 0) (local.get $n)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (i32.const 30000) (local.get $i))
        (i32.load8_u (i32.sub (i32.sub (local.get $n) (i32.const 1)) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (drop (call $log (i32.const 60000) (i32.const 9)))
    (drop (call $write (i32.const 30000) (local.get $n)))
    (i32.const 0)))"#;

const ALL_IO: [Capability; 3] = [Capability::ReadInput, Capability::WriteOutput, Capability::Log];

fn load(
    sandbox: &Sandbox,
    name: &str,
    wat: &str,
    caps: &[Capability],
) -> Result<sovereign_sandbox::LoadedModule, Termination> {
    let bytes = module(wat);
    let manifest = ModuleManifest::sign(name, 1, &bytes, caps, &release());
    sandbox.load(&bytes, &manifest, &release().verifying_key())
}

fn run_wat(sandbox: &Sandbox, wat: &str, limits: Limits) -> Result<sovereign_sandbox::Outcome, Termination> {
    let m = load(sandbox, "hostile", wat, &[])?;
    sandbox.run(&m, &[], b"", limits)
}

fn small() -> Limits {
    Limits { fuel: 5_000_000, memory_bytes: 4 << 20, wall_ms: 2_000, ..Limits::default() }
}

#[test]
fn a_good_module_runs_deterministically_with_its_grants() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let m = load(&sandbox, "reverse", REVERSE, &ALL_IO).unwrap();
    let a = sandbox.run(&m, &ALL_IO, b"sovereign", small()).unwrap();
    assert_eq!(a.output, b"ngierevos");
    assert_eq!(a.log, vec!["reversing".to_string()]);
    let b = sandbox.run(&m, &ALL_IO, b"sovereign", small()).unwrap();
    assert_eq!((a.output_sha256, a.fuel_used), (b.output_sha256, b.fuel_used), "replay differs");
}

#[test]
fn hostile_modules_end_with_their_reason_and_the_sandbox_keeps_serving() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    // Infinite loop: out of fuel; with fuel to spare, the wall clock stops it.
    let spin =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))"#;
    assert_eq!(run_wat(&sandbox, spin, small()).unwrap_err(), Termination::FuelExhausted(5_000_000));
    let timed = Limits { fuel: u64::MAX / 2, wall_ms: 200, ..small() };
    assert_eq!(run_wat(&sandbox, spin, timed).unwrap_err(), Termination::WallClock(200));
    // Memory bomb.
    let bomb = r#"(module (memory (export "memory") 1)
      (func (export "run") (result i32) (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)))"#;
    assert_eq!(run_wat(&sandbox, bomb, small()).unwrap_err(), Termination::Memory(4 << 20));
    // Deep recursion.
    let deep = r#"(module (memory (export "memory") 1)
      (func $f (param i32) (result i32) (call $f (i32.add (local.get 0) (i32.const 1))))
      (func (export "run") (result i32) (call $f (i32.const 0))))"#;
    assert_eq!(
        run_wat(&sandbox, deep, Limits { fuel: u64::MAX / 2, ..small() }).unwrap_err(),
        Termination::StackOverflow
    );
    // A trap mid-run.
    let trap = r#"(module (memory (export "memory") 1) (func (export "run") (result i32) unreachable))"#;
    assert!(matches!(run_wat(&sandbox, trap, small()).unwrap_err(), Termination::Trap(t) if t.contains("unreachable")));
    // Out-of-bounds pointer handed to the host.
    let oob = r#"(module (import "sovereign" "output_write" (func $w (param i32 i32) (result i32)))
      (memory (export "memory") 1) (func (export "run") (result i32) (drop (call $w (i32.const 65530) (i32.const 100))) (i32.const 0)))"#;
    let m = load(&sandbox, "oob", oob, &[Capability::WriteOutput]).unwrap();
    assert!(
        matches!(sandbox.run(&m, &[Capability::WriteOutput], b"", small()).unwrap_err(), Termination::Abi(a) if a.contains("outside"))
    );
    // A non-zero status.
    let fail = r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 7)))"#;
    assert_eq!(run_wat(&sandbox, fail, small()).unwrap_err(), Termination::Failed(7));
    // After all of that, a good module still runs.
    let m = load(&sandbox, "reverse", REVERSE, &ALL_IO).unwrap();
    assert_eq!(sandbox.run(&m, &ALL_IO, b"ok", small()).unwrap().output, b"ko");
}

#[test]
fn imports_need_a_declared_and_granted_capability() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let wants_random = r#"(module (import "sovereign" "random" (func $r (param i32 i32) (result i32)))
      (memory (export "memory") 1) (func (export "run") (result i32) (drop (call $r (i32.const 0) (i32.const 8))) (i32.const 0)))"#;
    // Declared in the manifest but not granted by the stage.
    let m = load(&sandbox, "rng", wants_random, &[Capability::Random]).unwrap();
    let e = sandbox.run(&m, &[Capability::ReadInput], b"", small()).unwrap_err();
    assert!(matches!(&e, Termination::ImportNotGranted(w) if w.contains("random")), "{e}");
    assert!(sandbox.run(&m, &[Capability::Random], b"", small()).is_ok());
    // Not declared in the manifest: refused at load.
    let e = load(&sandbox, "rng", wants_random, &[]).unwrap_err();
    assert!(matches!(&e, Termination::ImportNotGranted(w) if w.contains("does not declare")), "{e}");
    // WASI or anything else: there is no such capability.
    let wasi = r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#;
    let e = load(&sandbox, "wasi", wasi, &[]).unwrap_err();
    assert!(matches!(&e, Termination::ImportNotGranted(w) if w.contains("wasi_snapshot_preview1.fd_write")), "{e}");
}

#[test]
fn unsigned_or_altered_modules_are_refused_before_compilation() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let bytes = module(REVERSE);
    let manifest = ModuleManifest::sign("reverse", 1, &bytes, &ALL_IO, &release());
    let mut altered = bytes.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let e = sandbox.load(&altered, &manifest, &release().verifying_key()).unwrap_err();
    assert!(matches!(&e, Termination::Refused(w) if w.contains("the manifest pins")), "{e}");
    let other = SigningKey::from_bytes(&[7; 32]);
    let foreign = ModuleManifest::sign("reverse", 1, &bytes, &ALL_IO, &other);
    let e = sandbox.load(&bytes, &foreign, &release().verifying_key()).unwrap_err();
    assert!(matches!(&e, Termination::Refused(w) if w.contains("not signed by the release key")), "{e}");
    let mut escalated = manifest.clone();
    escalated.capabilities.push(Capability::Random);
    let e = sandbox.load(&bytes, &escalated, &release().verifying_key()).unwrap_err();
    assert!(matches!(&e, Termination::Refused(w) if w.contains("does not verify")), "{e}");
}

#[test]
fn nan_results_are_canonical() {
    let sandbox = Sandbox::new(64 << 20).unwrap();
    let nan = r#"(module (import "sovereign" "output_write" (func $w (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (f32.store (i32.const 0) (f32.div (f32.const 0) (f32.const 0)))
        (drop (call $w (i32.const 0) (i32.const 4))) (i32.const 0)))"#;
    let m = load(&sandbox, "nan", nan, &[Capability::WriteOutput]).unwrap();
    let out = sandbox.run(&m, &[Capability::WriteOutput], b"", small()).unwrap();
    assert_eq!(u32::from_le_bytes(out.output.try_into().unwrap()) & 0x7fff_ffff, 0x7fc0_0000);
}
