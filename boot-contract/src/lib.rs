//! `sovereign-boot-contract`: what the image builder, PID 1 and the runtime agree on, and
//! nothing else — the paths inside the image, the runtime configuration, the disk layout and
//! its factory marker, the signed manifest ([`manifest`]), and what PID 1 hands the runtime on
//! its standard input ([`Handover`]: the node keys and the facts of this boot).
//!
//! Pure: no IO, no TPM, no external tools. PID 1 and the runtime depend on this crate and not on
//! the image builder (`sovereign-image`, with its CLI and tool-running code).
//!
//! Must never: do IO, panic on bytes it parses, or hold key material outside `Zeroizing`
//! buffers (the keys only pass through [`Handover`]).

#![forbid(unsafe_code)]

pub mod gpu;
pub mod manifest;
pub mod network;
pub mod rotation;
pub mod slots;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Where the runtime lives in the initramfs.
pub const RUNTIME_PATH: &str = "/usr/bin/sovereign-runtime";
/// Where PID 1 mounts the data partition (nosuid, nodev, noexec).
pub const DATA_MOUNT: &str = "/state";
/// Where the runtime configuration lives.
pub const CONFIG_PATH: &str = "/etc/sovereign/runtime.json";
/// The signed manifest.
pub const MANIFEST_PATH: &str = "/etc/sovereign/manifest.json";
/// The manifest signature.
pub const MANIFEST_SIG_PATH: &str = "/etc/sovereign/manifest.sig";
/// The release's update policy: a policy bundle (Datalog) signed by the release key, which
/// decides the governed action `update.apply`.
pub const UPDATE_POLICY_PATH: &str = "/etc/sovereign/update-policy.json";
/// Where PID 1 puts the reference values it checked, for the runtime's compliance bundles.
pub const RUN_REFERENCE_PATH: &str = "/run/sovereign/reference-values.json";
/// Their signature, beside them.
pub const RUN_REFERENCE_SIG_PATH: &str = "/run/sovereign/reference-values.sig";

/// The factory marker PID 1 requires before it provisions keys (`sovereign_init::state::FRESH`).
pub const STATE_FRESH_MARKER: &[u8; 8] = b"SVFRESH1";
/// Offset of the state partition in the disk image (its key area starts here).
pub const STATE_PARTITION_OFFSET: u64 = 65 * 1024 * 1024;
/// Offset of the data partition in the disk image.
pub const DATA_PARTITION_OFFSET: u64 = 81 * 1024 * 1024;
/// Size of the data partition.
pub const DATA_PARTITION_SIZE: u64 = 512 * 1024 * 1024;

/// The runtime configuration (signed through the manifest, measured into PCR 15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Block device of the EFI system partition.
    pub esp_device: String,
    /// Block device of the state partition.
    pub state_device: String,
    /// Block device of the data partition (ext4, mounted at [`DATA_MOUNT`] noexec): the audit
    /// log, replay store, encrypted artifacts and pipeline runs.
    pub data_device: String,
    /// The admin root key (Ed25519, hex) that issues operator role certificates; the build
    /// fills in the release's admin key when empty.
    pub admin_root: String,
    /// The update root key (Ed25519, hex) that signs the release key sets of update bundles;
    /// the build fills in the release's when empty.
    #[serde(default)]
    pub update_root: String,
    /// How many distinct holders of the `update-approver` role (certificates from the admin
    /// root) must approve applying a staged update, M of however many hold it; 0 leaves it to
    /// the operator's signed request alone.
    #[serde(default)]
    pub update_approvals: u32,
    /// A signed rotation of the PCR-policy key this release's policies are signed with (see
    /// [`rotation`]): PID 1 reseals the node keys from the old key to the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr_policy_rotation: Option<rotation::PcrPolicyKeyRotation>,
    /// How many times PID 1 restarts a failed runtime before powering off.
    pub max_restarts: u32,
    /// Name of the virtio-serial port the control API is served on.
    pub control_port: String,
    /// Operator keys (Ed25519, hex) allowed to use the control API; the build adds the
    /// release's admin key when the list is empty.
    pub admins: Vec<String>,
    /// The network and the private mesh; absent, PID 1 configures no interface and the runtime
    /// opens no socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<network::MeshSettings>,
    /// The Bitcoin licence rule this node's licence proofs are judged by; absent, the node
    /// takes no licence and its policies see no `licensed` fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<LicenceSettings>,
    /// GPU governance limits and the emergency-stop rule; absent, the defaults
    /// ([`gpu::GpuSettings::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<gpu::GpuSettings>,
}

/// A node's Bitcoin licence rule (seed 001): a licence is a transaction, buried at least
/// `depth` blocks deep in a chain from the pinned checkpoint, that pays at least `amount_sat` to
/// `script` and carries `OP_RETURN SHA256("LICENSE" || machine_id)` — the machine ID being the
/// node identity's public key (TPM-sealed, so not copyable to another machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceSettings {
    /// `bitcoin`, `signet` or `regtest`.
    pub network: String,
    /// The pinned checkpoint's height (an epoch boundary, or 0 for genesis).
    pub checkpoint_height: u32,
    /// The pinned checkpoint's 80-byte header (hex); absent at height 0: the network's genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_header: Option<String>,
    /// The developer's scriptPubKey (hex).
    pub script: String,
    /// The least the developer must be paid, in satoshis.
    pub amount_sat: u64,
    /// Confirmations required.
    pub depth: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            esp_device: "/dev/vda1".into(),
            state_device: "/dev/vda2".into(),
            data_device: "/dev/vda3".into(),
            admin_root: String::new(),
            update_root: String::new(),
            update_approvals: 0,
            pcr_policy_rotation: None,
            max_restarts: 3,
            control_port: "sovereign.control".into(),
            admins: Vec::new(),
            mesh: None,
            licence: None,
            gpu: None,
        }
    }
}

/// What PID 1 established about this boot before it released the keys, handed to the runtime
/// with them. The runtime gives these to the policy engine as measurements; none of them is a
/// constant the runtime assumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFacts {
    /// The PCRs PID 1 read matched the release's signed PCR policy and the keys unsealed under
    /// it (PID 1 hands over no keys otherwise, so a runtime started by PID 1 sees `true`; the
    /// runtime still checks the PCRs below against the TPM).
    pub measured_boot: bool,
    /// The version of the signed manifest PID 1 verified.
    pub image_version: u64,
    /// PCRs 0–15 (SHA-256, hex) as PID 1 read them after closing the unseal window.
    pub pcrs: BTreeMap<u8, String>,
    /// The separator was extended into PCR 15: the sealed keys cannot be unsealed again this
    /// boot.
    pub unseal_window_closed: bool,
}

impl BootFacts {
    /// The facts as the policy engine's `input_measurement[name, value]` pairs: `measured_boot`,
    /// `image_version`, `unseal_window_closed` and `pcr_<n>` (hex).
    pub fn measurements(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::from([
            ("measured_boot".to_string(), serde_json::json!(self.measured_boot)),
            ("image_version".to_string(), serde_json::json!(self.image_version)),
            ("unseal_window_closed".to_string(), serde_json::json!(self.unseal_window_closed)),
        ]);
        for (pcr, value) in &self.pcrs {
            m.insert(format!("pcr_{pcr}"), serde_json::json!(value));
        }
        m
    }
}

/// The largest boot-facts record a runtime accepts.
pub const MAX_FACTS_BYTES: usize = 64 * 1024;

/// What PID 1 writes to the runtime's standard input, once, through a pipe:
/// `identity seed (32) || data key (32) || facts length (u32, big-endian) || facts (JSON)`.
pub struct Handover {
    /// The node identity's Ed25519 seed.
    pub identity_seed: Zeroizing<[u8; 32]>,
    /// The AES-256 data key.
    pub data_key: Zeroizing<[u8; 32]>,
    /// What PID 1 established about this boot.
    pub facts: BootFacts,
}

/// Why a handover was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// Fewer bytes than the layout needs.
    #[error("handover truncated: {0}")]
    Truncated(&'static str),
    /// The facts record is larger than [`MAX_FACTS_BYTES`].
    #[error("boot facts of {0} bytes exceed the {MAX_FACTS_BYTES}-byte limit")]
    TooLarge(usize),
    /// The facts record does not decode.
    #[error("boot facts malformed: {0}")]
    Malformed(String),
    /// Bytes after the facts record.
    #[error("{0} unexpected bytes after the boot facts")]
    Trailing(usize),
}

impl Handover {
    /// The bytes PID 1 writes.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let facts = serde_json::to_vec(&self.facts).expect("serializing a plain struct cannot fail");
        let mut out = Zeroizing::new(Vec::with_capacity(68 + facts.len()));
        out.extend_from_slice(self.identity_seed.as_ref());
        out.extend_from_slice(self.data_key.as_ref());
        out.extend_from_slice(&(facts.len() as u32).to_be_bytes());
        out.extend_from_slice(&facts);
        out
    }

    /// Parses what the runtime read from its standard input (all of it, up to end of file).
    pub fn decode(bytes: &[u8]) -> Result<Handover, HandoverError> {
        let take =
            |from: usize, n: usize, what: &'static str| bytes.get(from..from + n).ok_or(HandoverError::Truncated(what));
        let mut identity_seed = Zeroizing::new([0u8; 32]);
        identity_seed.copy_from_slice(take(0, 32, "no identity seed")?);
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(take(32, 32, "no data key")?);
        let len_bytes = take(64, 4, "no boot-facts length")?;
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len > MAX_FACTS_BYTES {
            return Err(HandoverError::TooLarge(len));
        }
        let facts = take(68, len, "boot facts shorter than their length")?;
        let trailing = bytes.len() - 68 - len;
        if trailing != 0 {
            return Err(HandoverError::Trailing(trailing));
        }
        let facts = serde_json::from_slice(facts).map_err(|e| HandoverError::Malformed(e.to_string()))?;
        Ok(Handover { identity_seed, data_key, facts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BootFacts {
        BootFacts {
            measured_boot: true,
            image_version: 7,
            pcrs: BTreeMap::from([(0, "ab".repeat(32)), (15, "cd".repeat(32))]),
            unseal_window_closed: true,
        }
    }

    fn handover() -> Handover {
        Handover { identity_seed: Zeroizing::new([1; 32]), data_key: Zeroizing::new([2; 32]), facts: facts() }
    }

    #[test]
    fn a_handover_round_trips() {
        let bytes = handover().encode();
        let back = Handover::decode(&bytes).expect("decodes");
        assert_eq!(*back.identity_seed, [1; 32]);
        assert_eq!(*back.data_key, [2; 32]);
        assert_eq!(back.facts, facts());
    }

    #[test]
    fn malformed_handovers_are_refused_by_name() {
        let bytes = handover().encode().to_vec();
        assert_eq!(Handover::decode(&bytes[..40]).err(), Some(HandoverError::Truncated("no data key")));
        assert_eq!(Handover::decode(&bytes[..66]).err(), Some(HandoverError::Truncated("no boot-facts length")));
        assert_eq!(
            Handover::decode(&bytes[..bytes.len() - 1]).err(),
            Some(HandoverError::Truncated("boot facts shorter than their length"))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Handover::decode(&long).err(), Some(HandoverError::Trailing(1)));
        let mut huge = bytes[..68].to_vec();
        huge[64..68].copy_from_slice(&(MAX_FACTS_BYTES as u32 + 1).to_be_bytes());
        assert_eq!(Handover::decode(&huge).err(), Some(HandoverError::TooLarge(MAX_FACTS_BYTES + 1)));
        let mut bad = bytes[..64].to_vec();
        bad.extend_from_slice(&2u32.to_be_bytes());
        bad.extend_from_slice(b"{]");
        assert!(matches!(Handover::decode(&bad), Err(HandoverError::Malformed(_))));
        // The keys alone (what PID 1 sent before boot facts existed) are not a handover.
        assert_eq!(Handover::decode(&bytes[..64]).err(), Some(HandoverError::Truncated("no boot-facts length")));
    }

    #[test]
    fn facts_become_the_policy_measurements() {
        let m = facts().measurements();
        assert_eq!(m["measured_boot"], serde_json::json!(true));
        assert_eq!(m["image_version"], serde_json::json!(7));
        assert_eq!(m["unseal_window_closed"], serde_json::json!(true));
        assert_eq!(m["pcr_15"], serde_json::json!("cd".repeat(32)));
        assert_eq!(m.len(), 5);
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Handover::decode(&bytes);
        }
    }
}
