//! `sovereign-image`: generate development keys and build signed Sovereign images.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sovereign_image::build::{self, BuildInput, DEFAULT_CMDLINE, Kernel, RuntimeConfig};
use sovereign_image::keys;

#[derive(Parser)]
#[command(name = "sovereign-image", version, about = "Build signed Sovereign appliance images")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Cmd {
    /// Generate a DEVELOPMENT key set (release, PCR policy, admin) in DIR.
    Keygen {
        /// Directory for the keys (must not hold keys yet).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Generate a swarm key for a private mesh (the IPFS `swarm.key` format libp2p's pnet
    /// reads) into OUT, readable by its owner only; prints its fingerprint, never the key.
    SwarmKey {
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Rotate the PCR-policy key of the key set in KEYS: a fresh key signs the policies of the
    /// releases built from now on; the current key becomes the retiring one, whose bridge
    /// signature lets nodes still sealed to it open their keys once and reseal them to the new
    /// key at GENERATION (one more than the last rotation's; 1 for the first). Once such a
    /// release is good on a node, the TPM refuses every copy sealed to the retiring key.
    RotatePcrPolicyKey {
        /// Key directory (see `keygen`).
        #[arg(long)]
        keys: PathBuf,
        /// The TPM key generation to reseal at (1..=64).
        #[arg(long)]
        generation: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the update bundle of a built image, signed by release signers of the key set in
    /// KEYS/update/, and check it as a node at the previous version would (exit 1 if refused).
    Bundle {
        /// Key directory (see `keygen`; `update/` is created if missing).
        #[arg(long)]
        keys: PathBuf,
        /// The built image directory.
        #[arg(long, default_value = "build/image")]
        image: PathBuf,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
        /// How many release signers sign (default: the key set's threshold).
        #[arg(long)]
        signers: Option<usize>,
        /// The platform the bundle is for.
        #[arg(long, default_value = sovereign_update::PLATFORM_QEMU_X86_64)]
        platform: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Writes an OVMF variable store with the Secure Boot keys of DIR (PK.crt, KEK.crt, db.crt)
    /// enrolled and Secure Boot on.
    SecureBootVars {
        /// Directory holding PK.crt, KEK.crt and db.crt.
        #[arg(long, default_value = "firmware/secure-boot")]
        keys: PathBuf,
        /// The empty variable store to start from.
        #[arg(long, default_value = "/usr/share/OVMF/OVMF_VARS_4M.fd")]
        template: PathBuf,
        /// Where to write the store.
        #[arg(long, default_value = "firmware/ovmf-vars-secureboot.fd")]
        out: PathBuf,
    },
    /// Build an image: initramfs, signed manifest, UKI, PCR policy, reference values, disk.
    Build {
        /// Key directory (see `keygen`).
        #[arg(long)]
        keys: PathBuf,
        /// PID 1 binary.
        #[arg(long)]
        init: PathBuf,
        /// Runtime binary.
        #[arg(long)]
        runtime: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Image version (monotonic).
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// The update policy (CozoScript) the image carries, signed with the release key
        /// (default: `examples/policies/update.cozo`, built in).
        #[arg(long)]
        update_policy: Option<PathBuf>,
        /// The private mesh this image's nodes form (JSON: interfaces by MAC with their static
        /// addresses, routes, port, swarm key, peers, attestation CA, EK roots, platform
        /// profile, admission lifetime, witness interval; see README "Forming a mesh"). Without
        /// it the image configures no network interface.
        #[arg(long)]
        mesh: Option<PathBuf>,
        /// The swarm key file (see `swarm-key`) for the mesh settings' `swarm_key`, when they
        /// leave it empty.
        #[arg(long, requires = "mesh")]
        swarm_key: Option<PathBuf>,
        /// The Bitcoin licence rule this image's nodes judge imported licence proofs by (JSON:
        /// network, checkpoint_height, checkpoint_header, script, amount_sat, depth; see README
        /// "Licences"). Without it the nodes take no licence.
        #[arg(long)]
        licence: Option<PathBuf>,
        /// The NVIDIA driver to carry (DIR/modules.order, DIR/modules/*.ko built for this
        /// image's kernel, DIR/lib/ with libnvidia-ml.so.1 and libcuda.so.1; see docs/gpu.md):
        /// every file hashed in the signed manifest, the modules loaded by PID 1. Without it the
        /// image has no GPU driver and its nodes say `no GPU: …`.
        #[arg(long)]
        gpu_driver: Option<PathBuf>,
        /// The GPU limits and emergency-stop rule of this image's nodes (JSON, the `gpu` block
        /// of the runtime configuration; see docs/gpu.md). Without it the defaults.
        #[arg(long)]
        gpu_limits: Option<PathBuf>,
        /// Kernel command line.
        #[arg(long, default_value = DEFAULT_CMDLINE)]
        cmdline: String,
        /// Use this kernel image instead of Debian's linux-image-amd64 (needs --modules-root and --kernel-release).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Root holding lib/modules/<release> for --kernel.
        #[arg(long)]
        modules_root: Option<PathBuf>,
        /// Kernel release for --kernel.
        #[arg(long)]
        kernel_release: Option<String>,
        /// Where Debian's kernel is downloaded and unpacked.
        #[arg(long, default_value = "/var/cache/sovereign/kernel")]
        kernel_cache: PathBuf,
        /// systemd EFI stub.
        #[arg(long, default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")]
        stub: PathBuf,
        /// The boot loader (systemd-boot: A/B slots with boot counting).
        #[arg(long, default_value = sovereign_image::build::SYSTEMD_BOOT)]
        loader: PathBuf,
        /// Secure Boot db private key (PEM) that signs the UKI; needs --db-cert. Without it the
        /// UKI is unsigned and firmware with Secure Boot on refuses it.
        #[arg(long, requires = "db_cert")]
        db_key: Option<PathBuf>,
        /// The db key's certificate (PEM), as enrolled in the firmware.
        #[arg(long, requires = "db_key")]
        db_cert: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sovereign-image: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when it completed with a refusal (exit 1).
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Cmd::Bundle { keys: key_dir, image, out, signers, platform, json } => {
            let keys = keys::load(&key_dir)?;
            let signers = signers.unwrap_or(keys::UPDATE_SIGNERS.1 as usize);
            let (bytes, written) = sovereign_image::update::bundle(&image, &keys, signers, &platform)?;
            std::fs::write(&out, &bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&written)?);
            } else {
                println!(
                    "wrote update bundle v{} to {} ({} bytes, sha256 {}), signed by {} release keys of key set {} (threshold {}), for {}",
                    written.release_version,
                    out.display(),
                    written.size,
                    written.sha256,
                    written.signed_by,
                    written.keyset_serial,
                    written.threshold,
                    written.platform
                );
                match &written.refused {
                    None => println!("  a node at v{} takes it", written.release_version.saturating_sub(1)),
                    Some(why) => {
                        println!("  REFUSED by a node at v{}: {why}", written.release_version.saturating_sub(1))
                    }
                }
            }
            return Ok(written.refused.is_none());
        }
        Cmd::RotatePcrPolicyKey { keys: dir, generation, json } => {
            let rotated = keys::rotate_pcr_policy_key(&dir, generation)?;
            let statement = rotated.pcr_policy_rotation.map(|r| r.statement);
            if json {
                println!("{}", serde_json::to_string_pretty(&statement)?);
            } else if let Some(s) = statement {
                println!("rotated the PCR-policy key in {} at key generation {}", dir.display(), s.generation);
                println!("  retiring: {}", s.from);
                println!("  new:      {}", s.to);
                println!(
                    "  every image built from this key set now carries the rotation and bridges nodes sealed to the retiring key"
                );
            }
        }
        Cmd::SwarmKey { out } => {
            use rand_core::RngCore as _;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            rand_core::OsRng.fill_bytes(bytes.as_mut());
            let key = sovereign_mesh::swarm_key::SwarmKey::from_bytes(*bytes);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .and_then(|mut f| f.write_all(key.to_file().as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            println!("wrote a swarm key to {} (fingerprint {})", out.display(), key.fingerprint());
        }
        Cmd::Keygen { dir } => {
            keys::generate(&dir)?;
            println!("wrote a DEVELOPMENT key set to {} (see {})", dir.display(), keys::MARKER);
        }
        Cmd::SecureBootVars { keys, template, out } => {
            build::write_secure_boot_vars(&keys, &template, &out)?;
            println!("wrote {} (Secure Boot on; PK, KEK, db from {})", out.display(), keys.display());
        }
        Cmd::Build {
            keys: key_dir,
            init,
            runtime,
            out,
            version,
            update_policy,
            mesh,
            swarm_key,
            licence,
            gpu_driver,
            gpu_limits,
            cmdline,
            kernel,
            modules_root,
            kernel_release,
            kernel_cache,
            stub,
            loader,
            db_key,
            db_cert,
        } => {
            let keys = keys::load(&key_dir)?;
            let kernel = match (kernel, modules_root, kernel_release) {
                (Some(image), Some(root), Some(release)) => Kernel { image, root, release },
                (None, None, None) => {
                    eprintln!("sovereign-image: fetching Debian's linux-image-amd64 into {} …", kernel_cache.display());
                    build::fetch_debian_kernel(&kernel_cache)?
                }
                _ => anyhow::bail!("--kernel needs --modules-root and --kernel-release"),
            };
            let secure_boot = match (db_key, db_cert) {
                (Some(key), Some(cert)) => Some(build::SecureBootKey { key, cert }),
                _ => None,
            };
            let input = BuildInput {
                init,
                runtime,
                kernel,
                version,
                cmdline,
                config: RuntimeConfig {
                    mesh: mesh_settings(mesh.as_deref(), swarm_key.as_deref())?,
                    licence: licence
                        .map(|path| -> anyhow::Result<_> {
                            let bytes = std::fs::read(&path)
                                .map_err(|e| anyhow::anyhow!("reading the licence rule {}: {e}", path.display()))?;
                            serde_json::from_slice(&bytes)
                                .map_err(|e| anyhow::anyhow!("the licence rule {}: {e}", path.display()))
                        })
                        .transpose()?,
                    gpu: gpu_limits
                        .map(|path| -> anyhow::Result<_> {
                            let bytes = std::fs::read(&path)
                                .map_err(|e| anyhow::anyhow!("reading the GPU limits {}: {e}", path.display()))?;
                            let settings: sovereign_boot_contract::gpu::GpuSettings = serde_json::from_slice(&bytes)
                                .map_err(|e| anyhow::anyhow!("the GPU limits {}: {e}", path.display()))?;
                            settings
                                .validate()
                                .map_err(|e| anyhow::anyhow!("the GPU limits {}: {e}", path.display()))?;
                            Ok(settings)
                        })
                        .transpose()?,
                    ..RuntimeConfig::default()
                },
                gpu_driver,
                update_policy: match update_policy {
                    Some(path) => std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading the update policy {}: {e}", path.display()))?,
                    None => build::DEFAULT_UPDATE_POLICY.into(),
                },
                stub,
                loader,
                secure_boot,
            };
            let built = build::build(&input, &keys, &out)?;
            println!("built image version {version} in {}", out.display());
            println!("  UKI:   {} (sha256 {})", built.uki.display(), built.reference.uki_sha256);
            println!("  disk:  {}", built.disk.display());
            for (pcr, value) in &built.reference.pcrs.0 {
                println!("  PCR {pcr:>2}: {value}");
            }
        }
    }
    Ok(true)
}

/// The mesh settings from their JSON file, with the swarm key from its own file when the
/// settings leave it empty (the two must not disagree).
fn mesh_settings(
    path: Option<&std::path::Path>,
    swarm_key: Option<&std::path::Path>,
) -> anyhow::Result<Option<sovereign_boot_contract::network::MeshSettings>> {
    let Some(path) = path else { return Ok(None) };
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading the mesh settings {}: {e}", path.display()))?;
    let mut settings: sovereign_boot_contract::network::MeshSettings =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("the mesh settings {}: {e}", path.display()))?;
    if let Some(key_path) = swarm_key {
        let text = std::fs::read_to_string(key_path)
            .map_err(|e| anyhow::anyhow!("reading the swarm key {}: {e}", key_path.display()))?;
        if !settings.swarm_key.is_empty() && settings.swarm_key != text {
            anyhow::bail!("{} names a swarm key and --swarm-key gives another", path.display());
        }
        settings.swarm_key = text;
    }
    Ok(Some(settings))
}
