//! `sovereign policy`: sign, evaluate and re-evaluate Datalog policies.

use anyhow::{Context as _, anyhow};
use ed25519_dalek::SigningKey;
use std::fs;
use std::path::Path;
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    use sovereign_governance::kernel::Verdict;
    use sovereign_governance::policy::{DecisionRecord, PolicyBundle, PolicyEngine, PolicyInput, reevaluate};
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let load = |bundle: &Path, trust: &[String]| -> anyhow::Result<PolicyBundle> {
        let b = PolicyBundle::from_json(&read(bundle)?).map_err(|e| anyhow!("{}: {e}", bundle.display()))?;
        let keys = trust.iter().map(|k| public_key(k)).collect::<anyhow::Result<Vec<_>>>()?;
        b.verify(&keys).map_err(|e| anyhow!("{}: {e}", bundle.display()))?;
        Ok(b)
    };
    let input_of = |p: &Path| -> anyhow::Result<PolicyInput> {
        serde_json::from_slice(&read(p)?).map_err(|e| anyhow!("{}: not a policy input: {e}", p.display()))
    };
    match cmd {
        PolicyCommand::Sign { program, name, version, key, out } => {
            let text = fs::read_to_string(&program).with_context(|| format!("reading {}", program.display()))?;
            let signer = SigningKey::from_bytes(&read_hex32(&key, "signing key")?);
            let bundle = PolicyBundle::sign(&name, version, &text, &signer);
            bundle.verify(&[signer.verifying_key()]).map_err(|e| anyhow!("{e}"))?;
            fs::write(&out, serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "signed policy {name}@{version} (policy hash {}) -> {}",
                hex::encode(bundle.hash()),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Eval { policy: PolicyFiles { bundle, input, trust, json }, record_out } => {
            let b = load(&bundle, &trust)?;
            let i = input_of(&input)?;
            let record = PolicyEngine::new().map_err(|e| anyhow!("{e}"))?.decide(&b, &i);
            if let Some(path) = record_out {
                fs::write(&path, serde_json::to_vec_pretty(&record)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let state = record.state();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "record": record, "record_hash": hex::encode(state.record_hash) })
                    )?
                );
            } else {
                println!(
                    "{}: {}",
                    if record.verdict == Verdict::Allow { "ALLOW" } else { "DENY" },
                    record.reasons.join("; ")
                );
                println!("  policy      {} ({})", record.policy, hex::encode(record.policy_hash));
                println!("  input hash  {}", hex::encode(record.input_hash));
                println!("  record hash {}", hex::encode(state.record_hash));
            }
            Ok(if record.verdict == Verdict::Allow { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        PolicyCommand::Reevaluate { record, policy: PolicyFiles { bundle, input, trust, json } } => {
            let b = load(&bundle, &trust)?;
            let i = input_of(&input)?;
            let r: DecisionRecord = serde_json::from_slice(&read(&record)?)
                .map_err(|e| anyhow!("{}: not a decision record: {e}", record.display()))?;
            let result = reevaluate(&r, &b, &i);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "verdict": if result.is_ok() { "PASS" } else { "FAIL" }, "reason": result.as_ref().err().map(ToString::to_string) })
                );
            } else {
                match &result {
                    Ok(()) => println!(
                        "PASS: the decision recomputes byte for byte ({:?}: {})",
                        r.verdict,
                        r.reasons.join("; ")
                    ),
                    Err(e) => println!("FAIL: {e}"),
                }
            }
            Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
