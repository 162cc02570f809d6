//! The command line: every subcommand, option and help text (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sovereign", version, about = "Sovereign operator CLI")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Verify a compliance bundle offline, trusting only the keys given here.
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        keys: VerifyKeys,
        #[command(flatten)]
        attestation: AttestTrustArgs,
        #[command(flatten)]
        anchor: VerifyAnchorArgs,
        /// The node's licence rule (the `LICENCE.json` its image was built with): the licence
        /// proof the bundle carries must pass it for --node-key, and back every decision that
        /// saw `licensed = true` (without it such a bundle FAILS as not evaluated).
        #[arg(long)]
        licence_rule: Option<PathBuf>,
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
        #[command(flatten)]
        port: ControlPort,
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
        /// After a PASS, certify the node's attestation key with this attestation-CA secret key
        /// file (hex) and store the certificate on the appliance: every compliance bundle then
        /// carries it, and `sovereign verify --ak-ca` checks it.
        #[arg(long)]
        ak_ca: Option<PathBuf>,
        /// How long the AK certificate is valid, in days.
        #[arg(long, default_value_t = 365, requires = "ak_ca")]
        ak_cert_days: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Audit-log tooling.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Updates: push a signed update bundle, see the node's update state.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Bitcoin licences: check one online through an Electrum server (writing the proof an
    /// air-gapped appliance imports), or verify a proof file offline.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Audit checkpoints anchored in Bitcoin: the unfunded PSBT for a bundle's checkpoint, and
    /// the offline check that it was mined.
    #[command(subcommand)]
    Anchor(AnchorCommand),
    /// GPU governance on the appliance: its GPUs (or `no GPU: <reason>`), the emergency stop
    /// and its clearance by M distinct gpu-operators.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// The appliance's metrics in the Prometheus text exposition format (governed decisions by
    /// verdict and policy, audit log size and append latency, sandbox terminations, attestations,
    /// mesh peers, GPU gauges), over the signed control API — the appliance opens no metrics
    /// port. Pipe it to a file a Prometheus node exporter's textfile collector reads, or parse it.
    Metrics {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output: the samples as JSON objects instead of the text format.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AnchorCommand {
    /// Write the anchoring transaction for a compliance bundle's checkpoint as an unsigned,
    /// unfunded PSBT (base64): one zero-value `OP_RETURN SHA256("sovereign-anchor/v1\n" ||
    /// checkpoint body)` output, for a wallet to fund, sign and broadcast.
    Prepare {
        /// The compliance bundle.
        bundle: PathBuf,
        /// Where to write the PSBT (base64).
        #[arg(long)]
        out: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Find a mined anchor through an Electrum server by its transaction ID (the block through
    /// the funding wallet's change output, or --height), verify it like an offline proof for
    /// the bundle's checkpoint, and write the anchor file (the checkpoint's body and the proof)
    /// for `anchor verify` and `sovereign verify --anchor`. Exit 1 with the reason otherwise.
    Check {
        /// The compliance bundle whose checkpoint was anchored (`anchor prepare`'s).
        #[arg(long, required_unless_present = "checkpoint", conflicts_with = "checkpoint")]
        bundle: Option<PathBuf>,
        /// Or the signed checkpoint the appliance anchored (`anchor request --checkpoint-out`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The anchoring transaction's ID (as the wallet that broadcast it shows it).
        #[arg(long)]
        txid: String,
        /// The Electrum server (`tcp://host:port`).
        #[arg(long)]
        electrum: String,
        /// The height of the block that holds it, when it has no change output to find it by.
        #[arg(long)]
        height: Option<u32>,
        #[command(flatten)]
        chain: AnchorChain,
        /// Seconds each server call may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Where to write the anchor file.
        #[arg(long)]
        out: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Have the appliance sign a fresh checkpoint of its audit log and prepare its anchor: the
    /// unfunded PSBT (--out) for a wallet to fund, sign and broadcast, and the signed
    /// checkpoint (--checkpoint-out) for `anchor check --checkpoint`. Audited by the appliance.
    Request {
        /// Where to write the PSBT (base64).
        #[arg(long)]
        out: PathBuf,
        /// Where to write the signed checkpoint.
        #[arg(long)]
        checkpoint_out: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Import a mined anchor into the appliance (`anchor check`'s file): it verifies it offline
    /// against the chain its configuration pins (its licence rule's network, checkpoint, depth)
    /// and that the checkpoint is one of its log's, keeps it and carries it in every later
    /// compliance bundle (`anchors/`, checked by `sovereign verify --anchor-network`); audited
    /// either way. Exit 1 with the refusal.
    Import {
        /// The anchor file.
        anchor: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check offline that a bundle's own checkpoint was anchored: the anchor file (`anchor
    /// check`'s) shows a transaction carrying its commitment at least --depth blocks deep in a
    /// chain from the pinned checkpoint (exit 1 otherwise). For an earlier checkpoint of the
    /// same log, `sovereign verify BUNDLE --anchor FILE` checks it is consistent with the
    /// bundle's.
    Verify {
        /// The anchor file.
        anchor: PathBuf,
        /// The compliance bundle whose checkpoint was anchored.
        #[arg(long)]
        bundle: PathBuf,
        #[command(flatten)]
        chain: AnchorChain,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// The chain an anchor must be in, and how deep.
#[derive(clap::Args)]
pub(crate) struct AnchorChain {
    /// `bitcoin`, `signet` or `regtest`.
    #[arg(long, default_value = "bitcoin")]
    pub(crate) network: String,
    /// Confirmations required.
    #[arg(long, default_value_t = 6)]
    pub(crate) depth: u32,
    /// The pinned checkpoint's height (an epoch boundary; 0: genesis).
    #[arg(long, default_value_t = 0)]
    pub(crate) checkpoint_height: u32,
    /// The pinned checkpoint's 80-byte header (hex); default: the network's genesis header.
    #[arg(long)]
    pub(crate) checkpoint_header: Option<String>,
}

/// The keys `sovereign verify` trusts.
#[derive(clap::Args)]
pub(crate) struct VerifyKeys {
    /// The node identity public key (64 hex characters, or a file holding them).
    #[arg(long)]
    pub(crate) node_key: Option<String>,
    /// A witness that must have cosigned the checkpoint: NAME=HEXKEY (repeatable).
    #[arg(long = "witness")]
    pub(crate) witnesses: Vec<String>,
    /// A key trusted to sign policies (hex or file; repeatable): the bundle's decisions are
    /// re-evaluated against the policies it carries that these keys signed.
    #[arg(long = "policy-key")]
    pub(crate) policy_keys: Vec<String>,
    /// The admin root key (hex or file): the bundle's role certificates and revocation
    /// lists must be signed by it, and every decision's roles granted by one of them.
    #[arg(long)]
    pub(crate) admin_key: Option<String>,
}

/// `sovereign verify --anchor`: checkpoints of the bundle's log anchored in Bitcoin.
#[derive(clap::Args)]
pub(crate) struct VerifyAnchorArgs {
    /// An anchor file (`sovereign anchor check`): its checkpoint must be of the bundle's log —
    /// the bundle's own, or an earlier one its entries are consistent with — and anchored at
    /// least --anchor-depth blocks deep.
    #[arg(long, requires = "anchor_network")]
    pub(crate) anchor: Option<PathBuf>,
    /// The chain anchors are checked in — `bitcoin`, `signet` or `regtest` — both the one given
    /// with --anchor and those the bundle carries (`anchors/`, imported by the appliance);
    /// without it a bundle that carries anchors FAILS as not evaluated.
    #[arg(long)]
    pub(crate) anchor_network: Option<String>,
    /// Confirmations the anchor needs.
    #[arg(long, default_value_t = 6)]
    pub(crate) anchor_depth: u32,
    /// The anchor chain's pinned checkpoint height (an epoch boundary; 0: genesis).
    #[arg(long, default_value_t = 0)]
    pub(crate) anchor_checkpoint_height: u32,
    /// The anchor chain's pinned checkpoint header (hex); default: the network's genesis.
    #[arg(long)]
    pub(crate) anchor_checkpoint_header: Option<String>,
}

/// What a licence must be and for whom.
#[derive(clap::Args)]
pub(crate) struct LicenseTerms {
    /// `bitcoin`, `signet` or `regtest`.
    #[arg(long, default_value = "bitcoin")]
    pub(crate) network: String,
    /// The developer's scriptPubKey (hex).
    #[arg(long)]
    pub(crate) script: String,
    /// The least the developer must be paid, in satoshis.
    #[arg(long)]
    pub(crate) amount: u64,
    /// The machine ID (hex): the node identity the licence is for.
    #[arg(long)]
    pub(crate) machine_id: String,
    /// Confirmations required.
    #[arg(long, default_value_t = 6)]
    pub(crate) depth: u32,
    /// The pinned checkpoint's height (an epoch boundary; 0: genesis).
    #[arg(long, default_value_t = 0)]
    pub(crate) checkpoint_height: u32,
    /// The pinned checkpoint's 80-byte header (hex); default: the network's genesis header.
    #[arg(long)]
    pub(crate) checkpoint_header: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum LicenseCommand {
    /// Fetch the licence proof from an Electrum server, verify it like an imported one, and
    /// write it (exit 1 when there is no valid licence, with the reason).
    Check {
        /// The Electrum server (`tcp://host:port`).
        #[arg(long)]
        electrum: String,
        #[command(flatten)]
        terms: LicenseTerms,
        /// Seconds each server call may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Where to write the proof file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Verify a licence proof file offline.
    Verify {
        /// The proof file.
        proof: PathBuf,
        #[command(flatten)]
        terms: LicenseTerms,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Import a licence proof file into the appliance, which verifies it offline against its
    /// own configured rule for its own identity before keeping it (exit 1 with the refusal).
    Import {
        /// The proof file (`sovereign license check --out`).
        proof: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The appliance's licence as its policies see it (exit 1 when not licensed).
    Status {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Where the appliance's control API is reached: its control socket, or its mesh address with
/// the swarm key.
#[derive(clap::Args, Clone)]
pub(crate) struct ControlPort {
    /// The appliance's control socket (QEMU: the appliance directory's control.sock).
    #[arg(long, required_unless_present = "mesh", conflicts_with = "mesh")]
    pub(crate) socket: Option<PathBuf>,
    /// The appliance's mesh address, e.g. /ip4/10.0.0.2/tcp/4001 (with --swarm-key).
    #[arg(long, requires = "swarm_key")]
    pub(crate) mesh: Option<String>,
    /// The mesh's swarm key file (the IPFS swarm.key format), with --mesh.
    #[arg(long, requires = "mesh")]
    pub(crate) swarm_key: Option<PathBuf>,
}

impl ControlPort {
    /// The endpoint these options name.
    pub(crate) fn endpoint(&self) -> anyhow::Result<sovereign_cli::Endpoint> {
        endpoint(self.socket.as_deref(), self.mesh.as_deref(), self.swarm_key.as_deref())
    }
}

/// The endpoint `--socket`, or `--mesh` with `--swarm-key`, name.
pub(crate) fn endpoint(
    socket: Option<&std::path::Path>,
    mesh: Option<&str>,
    swarm_key: Option<&std::path::Path>,
) -> anyhow::Result<sovereign_cli::Endpoint> {
    use anyhow::Context as _;
    match (socket, mesh, swarm_key) {
        (Some(socket), None, _) => Ok(sovereign_cli::Endpoint::Socket(socket.to_path_buf())),
        (None, Some(address), Some(key_file)) => {
            let address = address.parse().with_context(|| format!("--mesh {address:?} is not a multiaddr"))?;
            let text = std::fs::read(key_file).with_context(|| format!("reading {}", key_file.display()))?;
            let swarm_key = sovereign_mesh::swarm_key::SwarmKey::parse(&text)
                .with_context(|| format!("the swarm key {}", key_file.display()))?;
            Ok(sovereign_cli::Endpoint::Mesh { address, swarm_key })
        }
        _ => anyhow::bail!("give the appliance's --socket, or its --mesh address with --swarm-key"),
    }
}

/// The appliance's control port and the operator key that signs requests.
#[derive(clap::Args)]
pub(crate) struct ApplianceArgs {
    #[command(flatten)]
    pub(crate) port: ControlPort,
    /// The operator's Ed25519 secret key file (hex).
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Pin the node identity (hex or file); otherwise the identity the node claims is used.
    #[arg(long)]
    pub(crate) node_key: Option<String>,
}

/// Trust roots for the attestation evidence a bundle carries.
#[derive(clap::Args)]
pub(crate) struct AttestTrustArgs {
    /// The release public key (hex or file).
    #[arg(long)]
    pub(crate) release_key: Option<String>,
    /// Pin the release's reference-values.json: the bundle's must be these. Without it the
    /// bundle's own are used, if the release key signed them.
    #[arg(long)]
    pub(crate) reference: Option<PathBuf>,
    /// The firmware platform profile.
    #[arg(long)]
    pub(crate) platform: Option<PathBuf>,
    /// PEM file with the TPM manufacturer's CA certificates.
    #[arg(long)]
    pub(crate) ek_ca: Option<PathBuf>,
    /// The attestation CA's public key (hex or file): the bundle's quote must come from an AK it
    /// certified for this node. Giving any attestation root asks for attestation: a bundle
    /// without it then fails.
    #[arg(long)]
    pub(crate) ak_ca: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum CertCommand {
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
pub(crate) enum ModuleCommand {
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
        /// Capabilities: read_input, write_output, log, random, clock (repeatable); gpu_kernel
        /// alone signs a GPU kernel image (PTX or cubin) instead of a WASM module.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Output manifest (default: NAME.manifest.json beside the module).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
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
pub(crate) struct PolicyFiles {
    /// The policy bundle.
    #[arg(long)]
    pub(crate) bundle: PathBuf,
    /// The input (principal, roles, action, resource, environment, context, signals, measurements).
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// A key trusted to sign policies (hex or file; repeatable).
    #[arg(long = "trust", required = true)]
    pub(crate) trust: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum UpdateCommand {
    /// Stream an update bundle (`sovereign-image bundle`) to the appliance: it verifies it
    /// completely (root, key set, M-of-N release signatures, floor, platform, every byte)
    /// before writing any of it, stages it, and audits the push either way. Exit 1 if refused.
    Push {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Have the appliance pull an update bundle from another node of its mesh that has it
    /// staged (pushed there, or pulled in turn): the appliance fetches it, by SHA-256, from
    /// that peer only if it admitted the peer (its TPM attestation verified), then verifies it
    /// completely as a push before writing any of it, stages it, and audits the pull either
    /// way. Exit 1 if refused.
    Pull {
        /// The node identity (Ed25519 public key, hex or a file holding it) of the peer that
        /// has the bundle staged (its `sovereign status` shows it).
        #[arg(long)]
        from: String,
        /// The bundle's SHA-256 (hex), as that node's `update status` shows it staged.
        #[arg(long)]
        sha256: String,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve applying an update bundle, offline, as one update approver: verifies the bundle
    /// completely first (update root, key set, M-of-N release signatures, every byte, the
    /// payload's signatures), then signs its release version and SHA-256 with the approver's
    /// key, valid for the given hours (at most 7 days). The operator passes the file to
    /// `update apply --approval`. Exit 1 if the bundle does not verify.
    Approve {
        /// The bundle (the same bytes the appliance staged).
        bundle: PathBuf,
        /// The update root the nodes carry (hex or a file holding it).
        #[arg(long)]
        update_root: String,
        /// The release key (hex or a file holding it).
        #[arg(long)]
        release_key: String,
        /// The platform the bundle must be for.
        #[arg(long, default_value = sovereign_update::PLATFORM_QEMU_X86_64)]
        platform: String,
        /// The approver's Ed25519 secret key file.
        #[arg(long)]
        approver_key: PathBuf,
        /// Hours the approval stays valid.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
        /// Where to write the approval (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// The appliance's update state: running release, anti-rollback floor, staged bundle, boot
    /// slots (good, on trial, failed) and a failed update the node fell back from.
    Status {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply the staged bundle: the appliance audits it, stops its runtime, and PID 1 verifies
    /// the bundle again, installs it in the other boot slot on trial and reboots into it. The
    /// new release is blessed (and the floor raised) once its runtime is healthy; otherwise the
    /// boot loader falls back and `status` reports the failure. A node configured to require
    /// update approvals (`update_approvals`) applies only with that many distinct approvers'
    /// `update approve` files and their `update-approver` certificates. Exit 1 if refused.
    Apply {
        /// An approval file (`sovereign update approve`); repeat for each approver.
        #[arg(long = "approval")]
        approvals: Vec<PathBuf>,
        /// An approver's role certificate (role update-approver); repeat for each approver.
        #[arg(long = "certificate")]
        certificates: Vec<PathBuf>,
        /// The admin root's current revocation list (required with approvals).
        #[arg(long)]
        revocations: Option<PathBuf>,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum GpuCommand {
    /// The appliance's GPUs as its governance sees them: `no GPU: <reason>`, or each device's
    /// last readings; the emergency stop; the last violations. Exit 1 while the stop is engaged.
    Status {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Engage the emergency stop: no new GPU work until gpu-operators clear it. Audited.
    Stop {
        /// Why (one line, at most 256 bytes).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve clearing engagement GENERATION of a node's emergency stop, offline, as one
    /// gpu-operator; the operator passes the file to `gpu clear --approval`.
    Approve {
        /// The node identity (hex or a file holding it).
        #[arg(long)]
        node: String,
        /// The engagement (`gpu status` shows it).
        #[arg(long)]
        generation: u64,
        /// The gpu-operator's Ed25519 secret key file.
        #[arg(long)]
        approver_key: PathBuf,
        /// Hours the approval stays valid (at most 168).
        #[arg(long, default_value_t = 1)]
        valid_hours: u64,
        /// Where to write the approval (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Clear the emergency stop with the approvals of as many distinct gpu-operators as the
    /// node requires. Exit 1 if refused.
    Clear {
        /// An approval file (`gpu approve`); repeat for each gpu-operator.
        #[arg(long = "approval")]
        approvals: Vec<PathBuf>,
        /// A gpu-operator's role certificate; repeat for each.
        #[arg(long = "certificate")]
        certificates: Vec<PathBuf>,
        /// The admin root's current revocation list.
        #[arg(long)]
        revocations: PathBuf,
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
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
        /// attestation, refusal, gpu).
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
        #[arg(long, conflicts_with_all = ["log", "data_key", "node_key_file", "mesh"], requires = "key")]
        socket: Option<PathBuf>,
        /// The appliance's mesh address (with --swarm-key and --key), instead of --socket.
        #[arg(long, conflicts_with_all = ["log", "data_key", "node_key_file"], requires_all = ["key", "swarm_key"])]
        mesh: Option<String>,
        /// The mesh's swarm key file, with --mesh.
        #[arg(long, requires = "mesh")]
        swarm_key: Option<PathBuf>,
        /// The operator's secret key file (with --socket or --mesh).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The log file.
        #[arg(long, required_unless_present_any = ["socket", "mesh"])]
        log: Option<PathBuf>,
        /// File holding the data key.
        #[arg(long, required_unless_present_any = ["socket", "mesh"])]
        data_key: Option<PathBuf>,
        /// File holding the node identity secret key.
        #[arg(long, required_unless_present_any = ["socket", "mesh"])]
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
