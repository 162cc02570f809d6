//! The TPM side of the control API: one attestation key for the life of the runtime, quotes
//! over [`ATTESTED_PCRS`] bound to the operator's nonce and the node identity, with the logs
//! and the signed manifest, and credential activation for the AK.

use std::fs;
use std::path::PathBuf;

use sovereign_measured_boot::PcrSelection;
use sovereign_measured_boot::tpm::{AttestationKey, Tpm};
use sovereign_protocol::{ATTESTED_PCRS, Evidence, attest_qualifying_data};

/// The kernel's TPM resource manager, the only TPM device the runtime may open.
pub const TCTI: &str = "device:/dev/tpmrm0";
/// The firmware's TCG event log: PID 1's copy of securityfs's root-only
/// `binary_bios_measurements` (the quote proves it: the log must replay to the quoted PCRs).
const FIRMWARE_LOG: &str = "/run/sovereign/firmware-eventlog.bin";
/// PID 1's measurement log.
const MEASUREMENT_LOG: &str = "/run/sovereign/measurement.log";

/// Holds the TPM open with one attestation key for the life of the runtime: the AK is
/// created once (tens of milliseconds) and every quote and credential activation reuses it.
pub struct Attestor {
    tcti: String,
    firmware_log: PathBuf,
    measurement_log: PathBuf,
    state: Option<(Tpm, AttestationKey, Option<Vec<u8>>)>,
}

impl Attestor {
    /// The appliance's attestor: its TPM through the kernel's resource manager, the firmware
    /// log from securityfs, PID 1's measurement log from /run.
    pub fn appliance() -> Self {
        Self::new(TCTI, FIRMWARE_LOG.as_ref(), MEASUREMENT_LOG.as_ref())
    }

    /// An attestor for another TPM and log location (benchmarks and tests on swtpm).
    pub fn new(tcti: &str, firmware_log: &std::path::Path, measurement_log: &std::path::Path) -> Self {
        Attestor {
            tcti: tcti.into(),
            firmware_log: firmware_log.into(),
            measurement_log: measurement_log.into(),
            state: None,
        }
    }

    fn ready(&mut self) -> Result<&mut (Tpm, AttestationKey, Option<Vec<u8>>), String> {
        if self.state.is_none() {
            let mut tpm = Tpm::open(&self.tcti).map_err(|e| e.to_string())?;
            let ak = tpm.create_attestation_key().map_err(|e| e.to_string())?;
            let ek_certificate = tpm.ek_certificate().map_err(|e| e.to_string())?;
            self.state = Some((tpm, ak, ek_certificate));
        }
        self.state.as_mut().ok_or_else(|| "TPM not open".to_string())
    }

    /// Opens the TPM and creates the AK now, so the first request does not pay for it.
    pub fn warm_up(&mut self) -> Result<(), String> {
        self.ready().map(|_| ())
    }

    /// A quote binding `nonce` and `identity`, with the logs and the signed manifest the node
    /// booted.
    pub fn evidence(
        &mut self,
        nonce: &[u8; 32],
        identity: &[u8; 32],
        node: &NodeFiles<'_>,
    ) -> Result<Evidence, String> {
        let selection = PcrSelection::new(ATTESTED_PCRS).map_err(|e| e.to_string())?;
        let read = |p: &PathBuf| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let (firmware_log, measurement_log) = (read(&self.firmware_log)?, read(&self.measurement_log)?);
        let (tpm, ak, ek_certificate) = self.ready()?;
        let quote = tpm.quote(ak, &attest_qualifying_data(nonce, identity), &selection).map_err(|e| e.to_string())?;
        Ok(Evidence {
            attest: quote.attest,
            signature: quote.signature,
            ak_public: quote.ak_public,
            ek_public: quote.ek_public,
            ek_certificate: ek_certificate.clone(),
            pcrs: quote.pcr_values.0.iter().map(|(i, v)| (*i, v.0)).collect(),
            firmware_log,
            measurement_log,
            manifest: node.manifest.to_vec(),
            manifest_signature: node.manifest_signature.to_vec(),
        })
    }

    /// Releases the credential made for this AK under this TPM's EK.
    pub fn activate(&mut self, credential_blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, String> {
        let (tpm, ak, _) = self.ready()?;
        tpm.activate_credential(ak, credential_blob, encrypted_secret).map_err(|e| e.to_string())
    }
}

impl Drop for Attestor {
    /// Flushes the AK and EK: without a resource manager (swtpm over TCP) they would stay
    /// loaded in the TPM after the connection closes.
    fn drop(&mut self) {
        if let Some((mut tpm, ak, _)) = self.state.take() {
            tpm.release_attestation_key(ak);
        }
    }
}

/// The signed manifest the node booted, as evidence carries it.
pub struct NodeFiles<'a> {
    /// Canonical manifest bytes.
    pub manifest: &'a [u8],
    /// Its detached release signature.
    pub manifest_signature: &'a [u8],
}
