//! `sovereign` — the operator CLI.
//!
//! The appliance commands `status`, `attest`, `run` and `approve` (signed control API;
//! attestation is verified offline against the operator's trust roots), `audit export
//! --socket` (a compliance bundle from the appliance), offline verification of compliance
//! bundles (`verify`, attestation included) and raw audit logs (`verify-log`), key and
//! certificate tooling (`keygen`, `cert`, `module sign`, `policy sign`) and audit-log tooling
//! for development and auditors' own tests. `update` arrives with its issue.
//!
//! Exit codes: 0 PASS / success, 1 a check failed, 2 usage or environment error.
//! Must never: report PASS for anything it could not check; read a secret key from anywhere
//! but a file the user named.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::bundle::{NamedKey, TrustedKeys, verify_bundle_with};
use sovereign_audit::export::{ExportOptions, export_bundle};
use sovereign_audit::note::{NoteVerifier, cosign_note};
use sovereign_audit::verify::{Report, verify_log_bytes};
use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};
use sovereign_canonical::now_ms;
use sovereign_protocol::pipeline::{Command as PipelineCommand, Reply};

#[derive(Parser)]
#[command(name = "sovereign", version, about = "Sovereign operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a compliance bundle offline, trusting only the keys given here.
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// The node identity public key (64 hex characters, or a file holding them).
        #[arg(long)]
        node_key: Option<String>,
        /// A witness that must have cosigned the checkpoint: NAME=HEXKEY (repeatable).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// A key trusted to sign policies (hex or file; repeatable): the bundle's decisions are
        /// re-evaluated against the policies it carries that these keys signed.
        #[arg(long = "policy-key")]
        policy_keys: Vec<String>,
        #[command(flatten)]
        attestation: AttestTrustArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a pipeline (the Iron Path) on the appliance, or resume one paused at promotion or
    /// interrupted by a restart of the runtime.
    Run {
        /// The pipeline file (seed-000 YAML); with --resume, the same file the run started with.
        pipeline: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// The dataset (default: the file the pipeline names, beside it or in datasets/).
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Directory with the stage modules (NAME.wasm + NAME.manifest.json).
        #[arg(long)]
        modules: PathBuf,
        /// The signed policy bundle in force.
        #[arg(long)]
        policy: PathBuf,
        /// The operator's role certificate (role pipeline-operator).
        #[arg(long)]
        certificate: PathBuf,
        /// The admin root's revocation list.
        #[arg(long)]
        revocations: PathBuf,
        /// Resume this run (after approvals, or after the runtime was interrupted) instead of
        /// starting one.
        #[arg(long)]
        resume: Option<String>,
        /// Write the run report, and the compliance bundle once exported, into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve a run's pending promotion as an approver (M-of-N).
    Approve {
        /// The run ID.
        run: String,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// The approver's Ed25519 secret key file (signs the approval).
        #[arg(long)]
        approver_key: PathBuf,
        /// The approver's role certificate.
        #[arg(long)]
        certificate: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the pipeline runs on the appliance, newest first (after a power cut: which were
    /// interrupted, to resume with `run --resume`).
    Runs {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Generate an Ed25519 key (secret to FILE, mode 0600; public key printed and written to FILE.pub).
    Keygen {
        /// Where to write the secret key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Role certificates and revocation lists (the admin root key signs them).
    #[command(subcommand)]
    Cert(CertCommand),
    /// WASM stage modules.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Policies: sign a Datalog program into a policy bundle, evaluate a request, re-evaluate a
    /// decision record.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify a raw (encrypted) audit log file offline.
    VerifyLog {
        /// The log file.
        log: PathBuf,
        /// File holding the AES-256 data key (64 hex characters).
        #[arg(long)]
        data_key: PathBuf,
        /// The node identity public key, to check the checkpoint stored beside the log.
        #[arg(long)]
        node_key: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running appliance for its status over the signed control API.
    Status {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Attest a running appliance: fresh-nonce TPM quote, credential activation, EK chain,
    /// event-log replay and every PCR against the signed reference values, verified offline.
    Attest {
        /// The appliance's control socket.
        #[arg(long)]
        socket: PathBuf,
        /// The operator's Ed25519 secret key file (hex).
        #[arg(long)]
        key: PathBuf,
        /// The release public key (hex or file).
        #[arg(long)]
        release_key: String,
        /// The release's `reference-values.json` (its signature is read from the `.sig` beside it).
        #[arg(long)]
        reference: PathBuf,
        /// The firmware platform profile (e.g. firmware/qemu-ovmf.json).
        #[arg(long)]
        platform: PathBuf,
        /// PEM file with the TPM manufacturer's CA certificates (the EK trust store).
        #[arg(long)]
        ek_ca: PathBuf,
        /// Pin the node identity (hex or file).
        #[arg(long)]
        node_key: Option<String>,
        /// Write the evidence, in standard TPM encodings, and the report to this directory.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Audit-log tooling.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// The appliance's control port and the operator key that signs requests.
#[derive(clap::Args)]
struct ApplianceArgs {
    /// The appliance's control socket (QEMU: the appliance directory's control.sock).
    #[arg(long)]
    socket: PathBuf,
    /// The operator's Ed25519 secret key file (hex).
    #[arg(long)]
    key: PathBuf,
    /// Pin the node identity (hex or file); otherwise the identity the node claims is used.
    #[arg(long)]
    node_key: Option<String>,
}

/// Trust roots for the attestation evidence a bundle carries.
#[derive(clap::Args)]
struct AttestTrustArgs {
    /// The release public key (hex or file).
    #[arg(long)]
    release_key: Option<String>,
    /// The release's reference-values.json (signature read from the .sig beside it).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The firmware platform profile.
    #[arg(long)]
    platform: Option<PathBuf>,
    /// PEM file with the TPM manufacturer's CA certificates.
    #[arg(long)]
    ek_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue a role certificate to an operator key.
    Issue {
        /// The admin root's secret key file.
        #[arg(long)]
        admin_key: PathBuf,
        /// The operator's public key (hex or file).
        #[arg(long)]
        operator: String,
        /// A role (repeatable), e.g. pipeline-operator, approver.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Serial number.
        #[arg(long, default_value_t = 1)]
        serial: u64,
        /// Days of validity.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a revocation list.
    Revocations {
        /// The admin root's secret key file.
        #[arg(long)]
        admin_key: PathBuf,
        /// Version (never lower than the installed one).
        #[arg(long)]
        version: u64,
        /// A revoked operator key (hex; repeatable).
        #[arg(long = "operator")]
        operators: Vec<String>,
        /// A revoked certificate serial (repeatable).
        #[arg(long = "serial")]
        serials: Vec<u64>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Sign a module's manifest (name, version, SHA-256, capabilities) with the release key.
    Sign {
        /// The module.
        wasm: PathBuf,
        /// The release key's secret file.
        #[arg(long)]
        key: PathBuf,
        /// Module name.
        #[arg(long)]
        name: String,
        /// Module version.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Capabilities: read_input, write_output, log, random, clock (repeatable).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Output manifest (default: NAME.manifest.json beside the module).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Sign a CozoScript program (rules defining allow[reason] / deny[reason]) into a policy bundle.
    Sign {
        /// The program file (e.g. examples/policies/claims-approval.cozo).
        program: PathBuf,
        /// Policy name.
        #[arg(long)]
        name: String,
        /// Policy version.
        #[arg(long)]
        version: u64,
        /// The signing key file (release or admin Ed25519 secret key, hex).
        #[arg(long)]
        key: PathBuf,
        /// Output bundle (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a request (policy input JSON) under a signed policy bundle. Exit 0 allow, 1 deny.
    Eval {
        #[command(flatten)]
        policy: PolicyFiles,
        /// Write the decision record (JSON) here.
        #[arg(long)]
        record_out: Option<PathBuf>,
    },
    /// Recompute a decision from its policy bundle and input; PASS only if byte-identical.
    Reevaluate {
        /// The decision record (JSON).
        #[arg(long)]
        record: PathBuf,
        #[command(flatten)]
        policy: PolicyFiles,
    },
}

/// The policy bundle and input a decision is made from, and whom to trust for the bundle.
#[derive(clap::Args)]
struct PolicyFiles {
    /// The policy bundle.
    #[arg(long)]
    bundle: PathBuf,
    /// The input (principal, roles, action, resource, environment, context, signals, measurements).
    #[arg(long)]
    input: PathBuf,
    /// A key trusted to sign policies (hex or file; repeatable).
    #[arg(long = "trust", required = true)]
    trust: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Create DEVELOPMENT keys (node identity, data key, a witness) and an empty log in DIR.
    Init {
        /// Directory to create.
        dir: PathBuf,
        /// The log's origin (checkpoint key name).
        #[arg(long, default_value = "sovereign.dev/node")]
        origin: String,
    },
    /// Append one entry (durable before this returns).
    Append {
        /// The log file.
        #[arg(long)]
        log: PathBuf,
        /// File holding the data key.
        #[arg(long)]
        data_key: PathBuf,
        /// Entry kind (boot_measurement, config_snapshot, role_signature, policy_decision,
        /// policy_binding, execution_start, execution_end, approval, artifact, update,
        /// attestation, refusal).
        #[arg(long)]
        kind: String,
        /// info, notice, warning or critical.
        #[arg(long, default_value = "info")]
        severity: String,
        /// Payload text.
        #[arg(long, default_value = "")]
        payload: String,
        /// Sign the entry with this Ed25519 secret key file (e.g. an operator key).
        #[arg(long)]
        sign_with: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of the log with the node identity and store it beside the log.
    Checkpoint {
        /// The log file.
        #[arg(long)]
        log: PathBuf,
        /// File holding the data key.
        #[arg(long)]
        data_key: PathBuf,
        /// File holding the node identity secret key.
        #[arg(long)]
        node_key_file: PathBuf,
    },
    /// Cosign the stored checkpoint as a witness (C2SP cosignature/v1).
    Cosign {
        /// The log file.
        #[arg(long)]
        log: PathBuf,
        /// File holding the data key.
        #[arg(long)]
        data_key: PathBuf,
        /// The witness's key name.
        #[arg(long)]
        name: String,
        /// File holding the witness's secret key.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Export a compliance bundle: from a running appliance (--socket, --key), or from a log
    /// file (--log, --data-key, --node-key-file).
    Export {
        /// The appliance's control socket.
        #[arg(long, conflicts_with_all = ["log", "data_key", "node_key_file"], requires = "key")]
        socket: Option<PathBuf>,
        /// The operator's secret key file (with --socket).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The log file.
        #[arg(long, required_unless_present = "socket")]
        log: Option<PathBuf>,
        /// File holding the data key.
        #[arg(long, required_unless_present = "socket")]
        data_key: Option<PathBuf>,
        /// File holding the node identity secret key.
        #[arg(long, required_unless_present = "socket")]
        node_key_file: Option<PathBuf>,
        /// Output bundle.
        #[arg(long)]
        out: PathBuf,
        /// First entry (inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Last entry (exclusive).
        #[arg(long)]
        to: Option<u64>,
        /// Witness key to list in the bundle: NAME=HEXKEY (repeatable).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// A signed policy bundle to carry in the bundle's `policies/` section, so its
        /// decisions can be re-evaluated offline (repeatable).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sovereign: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read_hex32(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {what} from {}", path.display()))?;
    sovereign_canonical::hex32(&text).map_err(|e| anyhow!("{} does not hold a {what}: {e}", path.display()))
}

fn public_key(arg: &str) -> anyhow::Result<VerifyingKey> {
    let text = if Path::new(arg).is_file() {
        fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    sovereign_canonical::ed25519_public_key(&text).map_err(|e| anyhow!("public key {arg:?} is {e}"))
}

fn named_key(arg: &str) -> anyhow::Result<(String, VerifyingKey)> {
    let (name, key) = arg.split_once('=').ok_or_else(|| anyhow!("witness {arg:?} must be NAME=HEXKEY"))?;
    Ok((name.to_string(), public_key(key)?))
}

fn write_secret(path: &Path, bytes: &[u8; 32]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", hex::encode(bytes)).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn report_out(report: &Report, title: &str, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let value = serde_json::json!({ "verdict": if report.passed() { "PASS" } else { "FAIL" }, "report": report });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", report.render(title));
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify { bundle, node_key, witnesses, policy_keys, attestation, json } => {
            let bytes = fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
            let trust = TrustedKeys {
                node: node_key.as_deref().map(public_key).transpose()?,
                witnesses: witnesses.iter().map(|w| named_key(w)).collect::<anyhow::Result<_>>()?,
            };
            if trust.node.is_none() && !json {
                eprintln!("sovereign: warning: no --node-key given; signature checks cannot pass without a pinned key");
            }
            let checker = sovereign_cli::decisions::DecisionChecker {
                policy_signers: policy_keys.iter().map(|k| public_key(k)).collect::<anyhow::Result<_>>()?,
            };
            let attest = sovereign_cli::pipeline::AttestationChecker {
                trust: attest_trust(&attestation, trust.node)?,
                identity: trust.node,
            };
            let checkers = sovereign_cli::pipeline::Checkers(vec![&checker, &attest]);
            let report = verify_bundle_with(&bytes, &trust, Some(&checkers));
            report_out(&report, &format!("compliance bundle {}", bundle.display()), json)
        }
        Command::Policy(cmd) => policy(cmd),
        Command::Run { pipeline, appliance, dataset, modules, policy, certificate, revocations, resume, out, json } => {
            let files =
                sovereign_cli::pipeline::RunFiles { pipeline, dataset, modules, policy, certificate, revocations };
            run_pipeline(&files, &appliance, resume.as_deref(), out.as_deref(), json)
        }
        Command::Approve { run, appliance, approver_key, certificate, json } => {
            approve(&run, &appliance, &approver_key, &certificate, json)
        }
        Command::Runs { appliance, json } => {
            let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
            let node = appliance.node_key.as_deref().map(public_key).transpose()?;
            let runs = match sovereign_cli::pipeline::command(
                &appliance.socket,
                &operator,
                node.as_ref(),
                &PipelineCommand::Runs,
                &[],
            )?
            .0
            {
                Reply::Runs(runs) => runs,
                Reply::Refused(why) => bail!("the appliance refused: {why}"),
                other => bail!("unexpected reply {other:?}"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", sovereign_cli::pipeline::render_runs(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => {
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            write_secret(&out, &seed)?;
            let public = hex::encode(SigningKey::from_bytes(&seed).verifying_key().as_bytes());
            seed.fill(0);
            let pub_path = PathBuf::from(format!("{}.pub", out.display()));
            fs::write(&pub_path, format!("{public}\n")).with_context(|| format!("writing {}", pub_path.display()))?;
            println!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert(cmd) => cert(cmd),
        Command::Module(ModuleCommand::Sign { wasm, key, name, version, capabilities, out }) => {
            let release = SigningKey::from_bytes(&read_hex32(&key, "release key")?);
            let bytes = fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let caps = capabilities
                .iter()
                .map(|c| sovereign_sandbox::Capability::of_name(c).ok_or_else(|| anyhow!("unknown capability {c:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let manifest = sovereign_sandbox::ModuleManifest::sign(&name, version, &bytes, &caps, &release);
            let out = out.unwrap_or_else(|| wasm.with_extension("manifest.json"));
            fs::write(&out, serde_json::to_vec_pretty(&manifest)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "signed module {name} v{version} (sha256 {}) -> {}",
                hex::encode(manifest.module_sha256),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyLog { log, data_key, node_key, json } => {
            let key = DataKey(read_hex32(&data_key, "data key")?);
            let bytes = fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            let checkpoint = sovereign_audit::store::read_checkpoint(&log)?;
            let origin =
                sovereign_audit::logfile::decode_header(&bytes, &key).map(|(h, _)| h.origin).unwrap_or_default();
            let node = node_key.as_deref().map(public_key).transpose()?.map(|k| NoteVerifier::new(origin, k));
            let report = verify_log_bytes(&bytes, &key, node.as_ref(), checkpoint.as_ref());
            report_out(&report, &format!("audit log {}", log.display()), json)
        }
        Command::Audit(cmd) => audit(cmd),
        Command::Attest { socket, key, release_key, reference, platform, ek_ca, node_key, save, json } => {
            let operator = SigningKey::from_bytes(&read_hex32(&key, "operator key")?);
            let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
            let trust = sovereign_cli::attest::Trust {
                release_key: public_key(&release_key)?,
                reference_values: read(&reference)?,
                reference_signature: read(&reference.with_extension("sig"))?,
                platform_profile: read(&platform)?,
                ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(&read(&ek_ca)?)
                    .map_err(|e| anyhow!("{}: {e}", ek_ca.display()))?,
                node_identity: node_key.as_deref().map(public_key).transpose()?,
            };
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let (exchange, report) =
                sovereign_cli::attest::attest(&socket, &operator, &trust, now, std::time::Duration::from_secs(60))?;
            if let (Some(dir), Some(exchange)) = (&save, &exchange) {
                sovereign_cli::attest::save(dir, exchange, &report)?;
            }
            if json {
                let value = serde_json::json!({
                    "verdict": if report.passed() { "PASS" } else { "FAIL" },
                    "identity": exchange.as_ref().map(|e| hex::encode(e.identity)),
                    "nonce": exchange.as_ref().map(|e| hex::encode(e.nonce)),
                    "report": report,
                    "saved_to": save,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report.render());
                if let Some(dir) = &save {
                    println!("  evidence saved to {}", dir.display());
                }
            }
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Status { appliance: ApplianceArgs { socket, key, node_key }, json } => {
            let operator = SigningKey::from_bytes(&read_hex32(&key, "operator key")?);
            let pinned = node_key.as_deref().map(public_key).transpose()?;
            // Without a pinned identity the status is addressed to any node, which answers it
            // signed by the identity it names (trust on first use).
            let addressed = pinned.map(|k| k.to_bytes()).unwrap_or(sovereign_protocol::ANY_NODE);
            let request =
                sovereign_cli::client::sign_addressed(sovereign_protocol::Request::Status, addressed, &[], &operator);
            let response = sovereign_cli::send(&socket, &request, std::time::Duration::from_secs(30))?;
            let identity = match node_key.as_deref() {
                Some(k) => public_key(k)?,
                None => VerifyingKey::from_bytes(&response.identity)
                    .map_err(|e| anyhow!("node identity is not a valid key: {e}"))?,
            };
            let verified = response.verify(&request, &identity).map_err(|e| anyhow!("response: {e}"))?;
            match verified {
                sovereign_protocol::Response::Status(st) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"version": st.version, "manifest_sha256": hex::encode(st.manifest_sha256), "uptime_s": st.uptime_s, "identity": hex::encode(st.identity), "confinement": st.confinement, "confinement_shortfalls": st.confinement.shortfalls(), "response_signature": "verified"})
                        );
                    } else {
                        println!("appliance status (response signed by the node identity, verified)");
                        println!("  image version:   {}", st.version);
                        println!("  manifest sha256: {}", hex::encode(st.manifest_sha256));
                        println!("  uptime:          {} s", st.uptime_s);
                        println!("  node identity:   {}", hex::encode(st.identity));
                        let c = &st.confinement;
                        println!(
                            "  runtime:         uid {} gid {}, capabilities eff {:#x} prm {:#x} bnd {:#x} amb {:#x}, no_new_privs {}, seccomp mode {} ({} filters), lockdown {}",
                            c.uids[0],
                            c.gids[0],
                            c.cap_eff,
                            c.cap_prm,
                            c.cap_bnd,
                            c.cap_amb,
                            c.no_new_privs,
                            c.seccomp_mode,
                            c.seccomp_filters,
                            c.lockdown
                        );
                        for shortfall in c.shortfalls() {
                            println!("  NOT CONFINED:    {shortfall}");
                        }
                    }
                    // A runtime that is not confined is a failed check, not a detail.
                    Ok(if st.confinement.shortfalls().is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
                }
                sovereign_protocol::Response::Refused(reason) => {
                    eprintln!("sovereign: the appliance refused the request: {reason}");
                    Ok(ExitCode::from(1))
                }
                other => bail!("unexpected response {other:?}"),
            }
        }
    }
}

fn attest_trust(
    args: &AttestTrustArgs,
    node: Option<VerifyingKey>,
) -> anyhow::Result<Option<sovereign_cli::attest::Trust>> {
    let (Some(release_key), Some(reference), Some(platform), Some(ek_ca)) =
        (&args.release_key, &args.reference, &args.platform, &args.ek_ca)
    else {
        return Ok(None);
    };
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(Some(sovereign_cli::attest::Trust {
        release_key: public_key(release_key)?,
        reference_values: read(reference)?,
        reference_signature: read(&reference.with_extension("sig"))?,
        platform_profile: read(platform)?,
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(&read(ek_ca)?)
            .map_err(|e| anyhow!("{}: {e}", ek_ca.display()))?,
        node_identity: node,
    }))
}

fn run_pipeline(
    files: &sovereign_cli::pipeline::RunFiles,
    appliance: &ApplianceArgs,
    resume: Option<&str>,
    out: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sovereign_cli::pipeline as p;
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let (command, payloads) = match resume {
        None => {
            let (start, payloads) = p::start_request(files, &operator)?;
            (PipelineCommand::Start(Box::new(start)), payloads)
        }
        Some(run_id) => {
            let yaml = fs::read(&files.pipeline).with_context(|| format!("reading {}", files.pipeline.display()))?;
            let pipeline = sovereign_pipeline::Pipeline::parse(&yaml).map_err(|e| anyhow!("{e}"))?;
            let certificate = serde_json::from_slice(&fs::read(&files.certificate)?)
                .with_context(|| format!("{} is not a role certificate", files.certificate.display()))?;
            (p::resume_request(run_id, &pipeline, certificate, &operator), vec![])
        }
    };
    let report = match p::command(&appliance.socket, &operator, node.as_ref(), &command, &payloads)?.0 {
        Reply::Run(r) => *r,
        Reply::Refused(why) => {
            eprintln!("sovereign: the appliance refused the run: {why}");
            return Ok(ExitCode::from(1));
        }
        other => bail!("unexpected reply {other:?}"),
    };
    let mut bundle_path = None;
    if let Some(dir) = out {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join(format!("run-{}.json", report.run_id)), serde_json::to_vec_pretty(&report)?)?;
        if let Some(hash) = report.bundle {
            let fetch = PipelineCommand::Artifact { run_id: report.run_id.clone(), sha256: hash };
            let (reply, payloads) = p::command(&appliance.socket, &operator, node.as_ref(), &fetch, &[])?;
            if !matches!(&reply, Reply::Blob(b) if b.sha256 == hash) {
                bail!("fetching the bundle: the appliance answered {reply:?}, not the bundle the run recorded");
            }
            let bytes = p::blob_payload(&reply, payloads).context("fetching the bundle")?;
            let path = dir.join("compliance-bundle.tar");
            fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            bundle_path = Some(path);
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "report": report, "bundle_path": bundle_path }))?
        );
    } else {
        print!("{}", p::render(&report));
        if let Some(path) = &bundle_path {
            println!("compliance bundle written to {}", path.display());
        }
    }
    Ok(ExitCode::from(p::exit_code(&report)))
}

fn approve(
    run: &str,
    appliance: &ApplianceArgs,
    approver_key: &Path,
    certificate: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sovereign_cli::pipeline as p;
    let operator = SigningKey::from_bytes(&read_hex32(&appliance.key, "operator key")?);
    let approver = SigningKey::from_bytes(&read_hex32(approver_key, "approver key")?);
    let node = appliance.node_key.as_deref().map(public_key).transpose()?;
    let certificate: sovereign_governance::signed::RoleCertificate =
        serde_json::from_slice(&fs::read(certificate).with_context(|| format!("reading {}", certificate.display()))?)
            .with_context(|| format!("{} is not a role certificate", certificate.display()))?;
    let status = PipelineCommand::Status { run_id: run.into() };
    let report = match p::command(&appliance.socket, &operator, node.as_ref(), &status, &[])?.0 {
        Reply::Run(r) => *r,
        Reply::Refused(why) => bail!("the appliance refused: {why}"),
        other => bail!("unexpected reply {other:?}"),
    };
    let sovereign_protocol::pipeline::RunStatus::AwaitingApprovals { digest, candidate, .. } = report.status else {
        bail!("run {run} has no promotion waiting for approvals ({:?})", report.status)
    };
    let approval = sovereign_governance::approvals::Approval::sign(digest, now_ms() + 24 * 3_600_000, &approver);
    let cmd = PipelineCommand::Approve { run_id: run.into(), approval, certificate };
    match p::command(&appliance.socket, &operator, node.as_ref(), &cmd, &[])?.0 {
        Reply::Approved { have, need } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"run": run, "model": hex::encode(candidate), "have": have, "need": need})
                );
            } else {
                println!(
                    "approved promotion of model {} in run {run}: {have} of {need} approvals",
                    hex::encode(candidate)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Reply::Refused(why) => {
            eprintln!("sovereign: the appliance refused the approval: {why}");
            Ok(ExitCode::from(1))
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

fn cert(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    use sovereign_governance::signed::{RevocationList, RoleCertificate};
    match cmd {
        CertCommand::Issue { admin_key, operator, roles, serial, days, out } => {
            let admin = SigningKey::from_bytes(&read_hex32(&admin_key, "admin key")?);
            let op = public_key(&operator)?;
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let cert = RoleCertificate::issue(&op, &roles, serial, now_ms() + days * 86_400_000, &admin);
            fs::write(&out, serde_json::to_vec_pretty(&cert)?).with_context(|| format!("writing {}", out.display()))?;
            println!("issued {} to {} -> {}", roles.join(", "), hex::encode(op.as_bytes()), out.display());
        }
        CertCommand::Revocations { admin_key, version, operators, serials, out } => {
            let admin = SigningKey::from_bytes(&read_hex32(&admin_key, "admin key")?);
            let ops = operators.iter().map(|o| public_key(o).map(|k| k.to_bytes())).collect::<anyhow::Result<_>>()?;
            let list = RevocationList::issue(version, ops, serials, &admin);
            fs::write(&out, serde_json::to_vec_pretty(&list)?).with_context(|| format!("writing {}", out.display()))?;
            println!("revocation list v{version} -> {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
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

fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Init { dir, origin } => {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut secrets = [[0u8; 32]; 3];
            for s in &mut secrets {
                OsRng.fill_bytes(s);
            }
            let [node, data, witness] = secrets;
            write_secret(&dir.join("node.key"), &node)?;
            write_secret(&dir.join("data.key"), &data)?;
            write_secret(&dir.join("witness.key"), &witness)?;
            let node_pub = hex::encode(SigningKey::from_bytes(&node).verifying_key().as_bytes());
            let witness_pub = hex::encode(SigningKey::from_bytes(&witness).verifying_key().as_bytes());
            fs::write(dir.join("node.pub"), format!("{node_pub}\n"))?;
            fs::write(dir.join("witness.pub"), format!("{witness_pub}\n"))?;
            fs::write(
                dir.join("DEVELOPMENT-KEYS.txt"),
                "These keys were generated by `sovereign audit init` for development and testing.\nThey are NOT appliance keys: on an appliance the node identity and data key are sealed in the TPM.\n",
            )?;
            AuditLog::create(&dir.join("audit.log"), &origin, &DataKey(data))?;
            println!("created DEVELOPMENT keys and an empty audit log in {}", dir.display());
            println!("  node identity (public): {node_pub}");
            println!("  witness (public):       {witness_pub}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Append { log, data_key, kind, severity, payload, sign_with, json } => {
            let key = DataKey(read_hex32(&data_key, "data key")?);
            let kind = EntryKind::from_name(&kind).ok_or_else(|| anyhow!("unknown entry kind {kind:?}"))?;
            let severity = Severity::from_name(&severity).ok_or_else(|| anyhow!("unknown severity {severity:?}"))?;
            let (log, _) = AuditLog::open(&log, &key)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let mut entry = Entry::new(kind, now, severity, vec![], payload.into_bytes());
            if let Some(path) = sign_with {
                entry = entry.sign(&SigningKey::from_bytes(&read_hex32(&path, "signing key")?));
            }
            let (index, hash) = log.append_entry(entry)?;
            if json {
                println!("{}", serde_json::json!({ "index": index, "entry_hash": hex::encode(hash) }));
            } else {
                println!("appended entry {index} ({}), durable: {}", kind.name(), hex::encode(hash));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { log, data_key, node_key_file } => {
            let key = DataKey(read_hex32(&data_key, "data key")?);
            let (log, _) = AuditLog::open(&log, &key)?;
            let note = log.checkpoint(&SigningKey::from_bytes(&read_hex32(&node_key_file, "node key")?))?;
            print!("{}", note.to_text());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Cosign { log, data_key, name, key_file } => {
            let key = DataKey(read_hex32(&data_key, "data key")?);
            let (log, _) = AuditLog::open(&log, &key)?;
            let Some(mut note) = log.latest_checkpoint()? else {
                bail!("no stored checkpoint to cosign; run `sovereign audit checkpoint` first")
            };
            let cp = sovereign_audit::note::Checkpoint::parse_body(&note.body)?;
            if cp.root != log.root_at(cp.size)? {
                bail!("refusing to cosign: the stored checkpoint does not match the log");
            }
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            cosign_note(&mut note, &name, &SigningKey::from_bytes(&read_hex32(&key_file, "witness key")?), now);
            log.store_checkpoint(&note)?;
            print!("{}", note.to_text());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { socket: Some(socket), key: Some(key), out, .. } => {
            let operator = SigningKey::from_bytes(&read_hex32(&key, "operator key")?);
            match sovereign_cli::pipeline::command(&socket, &operator, None, &PipelineCommand::ExportBundle, &[])? {
                (reply @ Reply::Blob(_), payloads) => {
                    let bytes = sovereign_cli::pipeline::blob_payload(&reply, payloads)?;
                    fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
                    println!(
                        "wrote {} ({} bytes) from the appliance: its whole audit log, checkpoint, TPM attestation and policies",
                        out.display(),
                        bytes.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                (Reply::Refused(why), _) => {
                    eprintln!("sovereign: the appliance refused the export: {why}");
                    Ok(ExitCode::from(1))
                }
                (other, _) => bail!("unexpected reply {other:?}"),
            }
        }
        AuditCommand::Export { log, data_key, node_key_file, out, from, to, witnesses, policies, .. } => {
            let (Some(log), Some(data_key), Some(node_key_file)) = (log, data_key, node_key_file) else {
                bail!("audit export needs --socket and --key, or --log, --data-key and --node-key-file")
            };
            let key = DataKey(read_hex32(&data_key, "data key")?);
            let (log, _) = AuditLog::open(&log, &key)?;
            let node = SigningKey::from_bytes(&read_hex32(&node_key_file, "node key")?);
            let size = log.size();
            let range = match (from, to) {
                (None, None) => None,
                (f, t) => Some((f.unwrap_or(0), t.unwrap_or(size))),
            };
            let witnesses = witnesses
                .iter()
                .map(|w| named_key(w).map(|(name, k)| NamedKey { name, key: hex::encode(k.as_bytes()) }))
                .collect::<anyhow::Result<_>>()?;
            let mut section_files = Vec::new();
            for path in &policies {
                let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let bundle = sovereign_governance::policy::PolicyBundle::from_json(&bytes)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                section_files.push(("policies".to_string(), format!("{}.json", hex::encode(bundle.hash())), bytes));
            }
            let bytes = export_bundle(&log, &key, &node, &ExportOptions { range, witnesses, section_files })?;
            fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} bytes, entries {}..{} of {size})",
                out.display(),
                bytes.len(),
                range.map_or(0, |r| r.0),
                range.map_or(size, |r| r.1)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
