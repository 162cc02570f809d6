//! The TPM edge: a thin wrapper over tss-esapi 7.7 for the operations Sovereign needs —
//! PCR read/extend (with the measurement log), seal/unseal to predicted PCRs and to signed PCR
//! policies (with the anti-rollback floor's PolicyNV), the attestation key, the EK certificate,
//! quotes, NV monotonic counters and the floor's NV bit field.
//!
//! Everything that can be computed without a TPM (policy digests, names, verification) lives in
//! the pure modules; this module only talks to the TPM and converts encodings. Every transient
//! object and session it creates is flushed before the call returns, success or failure —
//! except an [`AttestationKey`] (AK and its EK), held until [`Tpm::release_attestation_key`].

use std::str::FromStr as _;

use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, DefaultKey, ak, ek, nv, pcr as tss_pcr};
use tss_esapi::attributes::{NvIndexAttributesBuilder, ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures as ts;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall as _, UnMarshall as _};

use crate::measurement_log::{Measurement, MeasurementLog};
use crate::pcr::{PcrSelection, PcrValues, Sha256Digest};
use crate::policy::{PolicyKey, SignedPcrPolicy, authorization_hash, pcr_policy_digest};
use crate::sealed::{MAX_SEALED_SECRET, SealedBlob};
use crate::verify::QuoteEvidence;
use crate::wire::ParseError;

/// What failed while talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not one tss-esapi understands.
    #[error("TCTI {tcti:?} is not valid (expected e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=N): {source}")]
    BadTcti {
        /// The string given.
        tcti: String,
        /// The parser's complaint.
        source: tss_esapi::Error,
    },
    /// The TPM could not be reached.
    #[error("cannot open TPM via {tcti}: {source}")]
    Open {
        /// The TCTI used.
        tcti: String,
        /// The underlying error.
        source: tss_esapi::Error,
    },
    /// A TPM command failed.
    #[error("TPM {operation} failed: {source}")]
    Command {
        /// What was being done.
        operation: &'static str,
        /// The TPM or TSS error.
        source: tss_esapi::Error,
    },
    /// The TPM refused to unseal (wrong PCRs, bad signature, closed window).
    #[error("unseal refused by the TPM: {stage} failed ({source})")]
    UnsealRefused {
        /// The policy step that failed.
        stage: &'static str,
        /// The TPM's error.
        source: tss_esapi::Error,
    },
    /// A sealed blob could not be decoded.
    #[error("sealed blob is malformed: {0}")]
    BadBlob(#[from] ParseError),
    /// An argument was outside what this library or the TPM accepts.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

fn cmd(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { operation, source }
}

fn refused(stage: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::UnsealRefused { stage, source }
}

/// A loaded attestation key (restricted ECC P-256 signing key under the endorsement key).
#[derive(Debug)]
pub struct AttestationKey {
    handle: KeyHandle,
    /// The endorsement key, kept loaded for credential activation (RSA primary keys take tens
    /// of milliseconds to derive); flushed with the AK.
    ek: KeyHandle,
    /// Marshalled `TPMT_PUBLIC` of the AK.
    pub public: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of its parent, the endorsement key.
    pub ek_public: Vec<u8>,
}

/// An NV index tests may use for a counter of their own (owner range 0x01800000–0x01BFFFFF).
pub const TEST_COUNTER_INDEX: u32 = 0x0180_5358;
/// The NV index of the state anchor's counter: the audit log's and replay store's head on
/// the data partition is bound to it (owner range, beside the anti-rollback floor,
/// [`crate::floor::FLOOR_INDEX`]).
pub const STATE_ANCHOR_INDEX: u32 = 0x0180_5357;

/// One TPM session shared by the parts of a process that need the TPM (the runtime's
/// attestor and its state anchor), opened on first use. A TCP swtpm serves one client at a
/// time, and one session is all the kernel's resource manager needs to see.
#[derive(Clone)]
pub struct SharedTpm {
    tcti: String,
    session: std::sync::Arc<std::sync::Mutex<Option<Tpm>>>,
}

impl std::fmt::Debug for SharedTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTpm").field("tcti", &self.tcti).finish_non_exhaustive()
    }
}

impl SharedTpm {
    /// A session to the TPM at `tcti`, not opened yet.
    pub fn new(tcti: &str) -> Self {
        SharedTpm { tcti: tcti.into(), session: Default::default() }
    }

    /// Runs `f` on the session, opening it first if needed.
    pub fn with<T>(&self, f: impl FnOnce(&mut Tpm) -> Result<T, TpmError>) -> Result<T, TpmError> {
        let mut session =
            self.session.lock().map_err(|_| TpmError::Invalid("the shared TPM session is poisoned".into()))?;
        if session.is_none() {
            *session = Some(Tpm::open(&self.tcti)?);
        }
        match session.as_mut() {
            Some(tpm) => f(tpm),
            None => Err(TpmError::Invalid("the shared TPM session did not open".into())),
        }
    }
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tpm")
    }
}

fn pcr_selection_list(selection: &PcrSelection) -> Result<ts::PcrSelectionList, TpmError> {
    let slots = selection
        .indices()
        .iter()
        .map(|&i| ts::PcrSlot::try_from(1u32 << i).map_err(cmd("PCR slot conversion")))
        .collect::<Result<Vec<_>, _>>()?;
    ts::PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("building PCR selection"))
}

fn digest(d: &Sha256Digest) -> Result<ts::Digest, TpmError> {
    ts::Digest::try_from(d.0.to_vec()).map_err(cmd("digest conversion"))
}

impl Tpm {
    /// Opens the TPM named by a TCTI string: `device:/dev/tpmrm0` on the appliance,
    /// `swtpm:host=127.0.0.1,port=N` for a software TPM.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::BadTcti { tcti: tcti.into(), source })?;
        let ctx = Context::new(conf).map_err(|source| TpmError::Open { tcti: tcti.into(), source })?;
        Ok(Tpm { ctx })
    }

    /// Reads sha256-bank PCR values.
    pub fn pcr_read(&mut self, selection: &PcrSelection) -> Result<PcrValues, TpmError> {
        let list = pcr_selection_list(selection)?;
        let data = self.ctx.execute_without_session(|ctx| tss_pcr::read_all(ctx, list)).map_err(cmd("PCR_Read"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| TpmError::Invalid("TPM returned no sha256 bank (is it active?)".into()))?;
        let mut out = PcrValues::new();
        for &i in selection.indices() {
            let slot = ts::PcrSlot::try_from(1u32 << i).map_err(cmd("PCR slot conversion"))?;
            let d = bank
                .get_digest(slot)
                .and_then(|d| Sha256Digest::from_slice(d.value()))
                .ok_or_else(|| TpmError::Invalid(format!("TPM returned no sha256 value for PCR {i}")))?;
            out.set(i, d);
        }
        Ok(out)
    }

    /// Extends `pcr` in the sha256 bank with `measurement`.
    pub fn pcr_extend(&mut self, pcr: u8, measurement: &Sha256Digest) -> Result<(), TpmError> {
        let handle =
            PcrHandle::try_from(u32::from(pcr)).map_err(|_| TpmError::Invalid(format!("PCR {pcr} does not exist")))?;
        let mut values = ts::DigestValues::new();
        values.set(HashingAlgorithm::Sha256, digest(measurement)?);
        self.with_empty_password(|ctx| ctx.pcr_extend(handle, values)).map_err(cmd("PCR_Extend"))
    }

    /// Extends the PCR a measurement names and appends it to `log`. The log entry is added only
    /// after the TPM accepted the extension, so the log never claims an extension that did not
    /// happen.
    pub fn measure(&mut self, m: Measurement, log: &mut MeasurementLog) -> Result<(), TpmError> {
        self.pcr_extend(m.pcr, &m.digest)?;
        log.push(m);
        Ok(())
    }

    /// `n` bytes from the TPM's random number generator.
    pub fn random(&mut self, n: usize) -> Result<Vec<u8>, TpmError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let chunk = (n - out.len()).min(32);
            let d = self.ctx.execute_without_session(|ctx| ctx.get_random(chunk)).map_err(cmd("GetRandom"))?;
            out.extend_from_slice(d.value());
        }
        Ok(out)
    }

    /// Creates the storage root key (deterministic ECC P-256 primary in the owner hierarchy).
    fn storage_root(&mut self) -> Result<KeyHandle, TpmError> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_decrypt(true)
            .with_no_da(true)
            .build()
            .map_err(cmd("SRK attributes"))?;
        let params = ts::PublicEccParametersBuilder::new_restricted_decryption_key(
            ts::SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
        .build()
        .map_err(cmd("SRK parameters"))?;
        let public = ts::PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(params)
            .with_ecc_unique_identifier(ts::EccPoint::default())
            .build()
            .map_err(cmd("SRK template"))?;
        self.with_empty_password(|ctx| ctx.create_primary(Hierarchy::Owner, public, None, None, None, None))
            .map(|r| r.key_handle)
            .map_err(cmd("CreatePrimary (storage root)"))
    }

    /// Runs `f` under a password session carrying the empty auth value. tss-esapi's "nullauth"
    /// session (an unsalted, unbound HMAC session with parameter encryption) protects nothing
    /// more: its HMAC and encryption keys derive from the empty auth value and nonces that
    /// cross the bus in the clear, so anyone on the bus can compute them. It cost two more TPM
    /// commands and the host-side key derivation per call (~0.1 s a call under TCG, where PID 1
    /// extended PCR 15 in 0.13–0.22 s). What is secret crosses under sessions salted by the
    /// storage root key instead (seal, unseal).
    fn with_empty_password<T>(&mut self, f: impl FnOnce(&mut Context) -> T) -> T {
        self.ctx.execute_with_session(Some(AuthSession::Password), f)
    }

    fn flush(&mut self, handle: impl Into<ObjectHandle>) {
        let handle = handle.into();
        if let Err(e) = self.ctx.flush_context(handle) {
            tracing::debug!("flushing a transient handle failed (already gone?): {e}");
        }
    }

    /// Seals `secret` to an object whose only authorization is `auth_policy`.
    pub fn seal(&mut self, secret: &[u8], auth_policy: &Sha256Digest) -> Result<SealedBlob, TpmError> {
        if secret.is_empty() || secret.len() > MAX_SEALED_SECRET {
            return Err(TpmError::Invalid(format!(
                "secret is {} bytes; 1..={MAX_SEALED_SECRET} allowed",
                secret.len()
            )));
        }
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            // No userWithAuth: the policy is the only way in.
            .build()
            .map_err(cmd("sealed object attributes"))?;
        let public = ts::PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(digest(auth_policy)?)
            .with_keyed_hash_parameters(ts::PublicKeyedHashParameters::new(ts::KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(ts::Digest::default())
            .build()
            .map_err(cmd("sealed object template"))?;
        let sensitive = ts::SensitiveData::try_from(secret.to_vec()).map_err(cmd("sensitive data"))?;
        let srk = self.storage_root()?;
        // The secret travels to the TPM encrypted: an HMAC session salted by the storage root
        // key (only this TPM can recover the salt) with command-parameter encryption.
        let session = match self.start_salted_session(srk, SessionType::Hmac) {
            Ok(s) => s,
            Err(e) => {
                self.flush(srk);
                return Err(e);
            }
        };
        let created = self
            .ctx
            .execute_with_session(Some(session), |ctx| ctx.create(srk, public, None, Some(sensitive), None, None))
            .map_err(cmd("Create (sealed object)"));
        self.flush(ts_session_handle(session));
        self.flush(srk);
        let created = created?;
        Ok(SealedBlob {
            public: created.out_public.marshall().map_err(cmd("marshalling sealed public"))?,
            private: created.out_private.value().to_vec(),
        })
    }

    /// Seals `secret` so that it unseals only while the PCRs hold exactly `predicted` (values
    /// computed ahead of time, not read from this TPM).
    pub fn seal_to_pcrs(&mut self, secret: &[u8], predicted: &PcrValues) -> Result<SealedBlob, TpmError> {
        let policy =
            pcr_policy_digest(&predicted.selection(), predicted).map_err(|e| TpmError::Invalid(e.to_string()))?;
        self.seal(secret, &policy)
    }

    /// Seals `secret` so that it unseals under any PCR policy signed by `key`, while the TPM's
    /// PCR-policy key generation is at most `generation`.
    pub fn seal_to_policy_key(
        &mut self,
        secret: &[u8],
        key: &PolicyKey,
        generation: u64,
    ) -> Result<SealedBlob, TpmError> {
        let policy = key.sealing_policy(generation).map_err(|e| TpmError::Invalid(e.to_string()))?;
        self.seal(secret, &policy)
    }

    /// Starts a session salted by `salt_key` (a TPM-resident decryption key: the salt is
    /// encrypted to it, so only this TPM and this process know the session key) with command and
    /// response parameter encryption (AES-128-CFB): secrets in the first parameter of a command
    /// or response cross the TPM bus encrypted.
    fn start_salted_session(&mut self, salt_key: KeyHandle, kind: SessionType) -> Result<AuthSession, TpmError> {
        let session = self
            .ctx
            .start_auth_session(
                Some(salt_key),
                None,
                None,
                kind,
                ts::SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd("StartAuthSession (salted)"))?
            .ok_or_else(|| TpmError::Invalid("TPM returned no session".into()))?;
        let (attrs, mask) =
            SessionAttributesBuilder::new().with_decrypt(true).with_encrypt(true).with_continue_session(true).build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attrs, mask) {
            self.flush(ts_session_handle(session));
            return Err(cmd("TRSess_SetAttributes")(e));
        }
        Ok(session)
    }

    /// Loads `blob`, runs `policy` in a fresh policy session, unseals, and flushes everything.
    fn unseal_with<F>(&mut self, blob: &SealedBlob, policy: F) -> Result<Vec<u8>, TpmError>
    where
        F: FnOnce(&mut Self, PolicySession) -> Result<(), TpmError>,
    {
        let public = ts::Public::unmarshall(&blob.public).map_err(cmd("decoding sealed public"))?;
        let private = ts::Private::try_from(blob.private.clone()).map_err(cmd("decoding sealed private"))?;
        let srk = self.storage_root()?;
        let object =
            self.with_empty_password(|ctx| ctx.load(srk, private, public)).map_err(cmd("Load (sealed object)"));
        let object = match object {
            Ok(o) => o,
            Err(e) => {
                self.flush(srk);
                return Err(e);
            }
        };
        // The unsealed bytes come back encrypted under a session salted by the storage root.
        let session = self.start_salted_session(srk, SessionType::Policy);
        self.flush(srk);
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                self.flush(object);
                return Err(e);
            }
        };
        let result = (|| {
            let policy_session = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            policy(self, policy_session)?;
            self.ctx
                .execute_with_session(Some(session), |ctx| ctx.unseal(object.into()))
                .map(|d| d.value().to_vec())
                .map_err(refused("Unseal"))
        })();
        self.flush(object);
        self.flush(ts_session_handle(session));
        result
    }

    /// Unseals a blob sealed with [`Tpm::seal_to_pcrs`]; the TPM compares its current PCRs.
    pub fn unseal_with_pcrs(&mut self, blob: &SealedBlob, selection: &PcrSelection) -> Result<Vec<u8>, TpmError> {
        let list = pcr_selection_list(selection)?;
        self.unseal_with(blob, |tpm, session| {
            tpm.ctx
                .execute_without_session(|ctx| ctx.policy_pcr(session, ts::Digest::default(), list))
                .map_err(refused("PolicyPCR"))
        })
    }

    /// Unseals a blob sealed with [`Tpm::seal_to_policy_key`] at `generation`, presenting
    /// `policy` (signed by `key`). The TPM checks the current PCRs against the policy, the
    /// floor against its release, the signature against the key, the key against the one the
    /// object was sealed to, and its key generation against the object's.
    pub fn unseal_with_signed_policy(
        &mut self,
        blob: &SealedBlob,
        key: &PolicyKey,
        policy: &SignedPcrPolicy,
        generation: u64,
    ) -> Result<Vec<u8>, TpmError> {
        let selection = policy.selection();
        let list = pcr_selection_list(&selection)?;
        let pcr_digest = policy
            .pcrs
            .composite_digest(&selection)
            .ok_or_else(|| TpmError::Invalid("signed policy lacks PCR values".into()))?;
        let key_public = ts::Public::unmarshall(&key.tpm_public()).map_err(cmd("decoding policy key"))?;
        let signature = ts::Signature::unmarshall(&policy.signature).map_err(refused("decoding policy signature"))?;
        let ahash = digest(&authorization_hash(&policy.approved_policy, &policy.policy_ref))?;
        let pcr_digest = digest(&pcr_digest)?;
        let approved = digest(&policy.approved_policy)?;
        let policy_ref = ts::Nonce::try_from(policy.policy_ref.clone()).map_err(cmd("policyRef"))?;
        self.unseal_with(blob, |tpm, session| {
            tpm.ctx
                .execute_without_session(|ctx| ctx.policy_pcr(session, pcr_digest, list))
                .map_err(refused("PolicyPCR (current PCRs differ from the signed policy)"))?;
            tpm.policy_floor(session, policy.release_version)?;
            let key_handle = tpm
                .ctx
                .execute_without_session(|ctx| ctx.load_external_public(key_public, Hierarchy::Owner))
                .map_err(cmd("LoadExternal (policy key)"))?;
            let result = (|| {
                let name = tpm.ctx.tr_get_name(key_handle.into()).map_err(cmd("TR_GetName"))?;
                let ticket = tpm
                    .ctx
                    .execute_without_session(|ctx| ctx.verify_signature(key_handle, ahash, signature))
                    .map_err(refused("VerifySignature (policy not signed by the PCR-policy key)"))?;
                tpm.ctx
                    .execute_without_session(|ctx| ctx.policy_authorize(session, approved, policy_ref, &name, ticket))
                    .map_err(refused("PolicyAuthorize"))
            })();
            tpm.flush(key_handle);
            result?;
            tpm.policy_bit_field(
                session,
                crate::floor::KEY_GENERATION_INDEX,
                generation,
                "PolicyNV (the PCR-policy key generation is above this sealed object's: its key was rotated away)",
            )
        })
    }

    /// Creates the endorsement key (RSA-2048, TCG default template) and under it a restricted
    /// ECC P-256 ECDSA-SHA256 signing key: the attestation key. Both stay loaded until
    /// [`Tpm::release_attestation_key`] (the EK for credential activation).
    pub fn create_attestation_key(&mut self) -> Result<AttestationKey, TpmError> {
        self.attestation_key(None).map(|(ak, _)| ak)
    }

    /// The attestation key kept across boots: `stored` (what an earlier call returned, wrapped
    /// by this TPM's endorsement key, so it loads only in this TPM) is loaded again; without it,
    /// or when this TPM refuses it, a new AK is created. Returns the loaded key and the bytes
    /// to keep (`u32 length ‖ TPM2B_PRIVATE contents ‖ marshalled TPMT_PUBLIC`).
    pub fn attestation_key(&mut self, stored: Option<&[u8]>) -> Result<(AttestationKey, Vec<u8>), TpmError> {
        let ek = ek::create_ek_object(
            &mut self.ctx,
            tss_esapi::interface_types::algorithm::AsymmetricAlgorithm::Rsa,
            None::<DefaultKey>,
        )
        .map_err(cmd("CreatePrimary (endorsement key)"))?;
        let result = (|| {
            let (ek_public, _, _) = self
                .ctx
                .execute_without_session(|ctx| ctx.read_public(ek))
                .map_err(cmd("ReadPublic (endorsement key)"))?;
            let ek_public = ek_public.marshall().map_err(cmd("marshalling EK public"))?;
            if let Some((private, public)) = stored.and_then(split_stored_ak) {
                let loaded = ts::Private::try_from(private.to_vec())
                    .map_err(cmd("stored AK private"))
                    .and_then(|p| Ok((p, ts::Public::unmarshall(public).map_err(cmd("stored AK public"))?)))
                    .and_then(|(p, public_area)| {
                        ak::load_ak(&mut self.ctx, ek, None, p, public_area)
                            .map_err(cmd("Load (stored attestation key)"))
                    });
                if let Ok(handle) = loaded {
                    let bytes = stored.map(<[u8]>::to_vec).unwrap_or_default();
                    return Ok((AttestationKey { handle, ek, public: public.to_vec(), ek_public }, bytes));
                }
            }
            let created = ak::create_ak(
                &mut self.ctx,
                ek,
                HashingAlgorithm::Sha256,
                SignatureSchemeAlgorithm::EcDsa,
                None,
                None::<DefaultKey>,
            )
            .map_err(cmd("Create (attestation key)"))?;
            let public = created.out_public.marshall().map_err(cmd("marshalling AK public"))?;
            let private = created.out_private.value().to_vec();
            let handle = ak::load_ak(&mut self.ctx, ek, None, created.out_private, created.out_public)
                .map_err(cmd("Load (attestation key)"))?;
            let mut keep = u32::try_from(private.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
            keep.extend_from_slice(&private);
            keep.extend_from_slice(&public);
            Ok((AttestationKey { handle, ek, public, ek_public }, keep))
        })();
        if result.is_err() {
            self.flush(ek);
        }
        result
    }

    /// TPM2_ActivateCredential: releases the credential that a verifier made for this AK's
    /// name under this TPM's endorsement key (see [`crate::credential`]). The TPM does so only
    /// when the AK is loaded in the TPM that holds the EK, which is what ties the AK to the EK
    /// certificate. Both inputs are the contents of the TPM2B structures.
    pub fn activate_credential(
        &mut self,
        ak: &AttestationKey,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let blob = ts::IdObject::try_from(credential_blob.to_vec()).map_err(cmd("credential blob"))?;
        let secret = ts::EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(cmd("encrypted secret"))?;
        let ek = ak.ek;
        let mut sessions: Vec<AuthSession> = Vec::new();
        let result = (|| {
            let attributes = SessionAttributesBuilder::new().with_decrypt(true).with_encrypt(true).build();
            let mut start = |ctx: &mut Context, kind| -> Result<AuthSession, TpmError> {
                let session = ctx
                    .start_auth_session(
                        None,
                        None,
                        None,
                        kind,
                        ts::SymmetricDefinition::AES_128_CFB,
                        HashingAlgorithm::Sha256,
                    )
                    .map_err(cmd("StartAuthSession"))?
                    .ok_or_else(|| TpmError::Invalid("TPM returned no session".into()))?;
                sessions.push(session);
                // Parameter encryption on the HMAC session only: ESAPI allows one per command.
                if kind == SessionType::Hmac {
                    ctx.tr_sess_set_attributes(session, attributes.0, attributes.1)
                        .map_err(cmd("TRSess_SetAttributes"))?;
                }
                Ok(session)
            };
            let hmac = start(&mut self.ctx, SessionType::Hmac)?;
            let policy = start(&mut self.ctx, SessionType::Policy)?;
            let policy_session = PolicySession::try_from(policy).map_err(cmd("policy session"))?;
            self.ctx
                .execute_with_session(Some(hmac), |ctx| {
                    ctx.policy_secret(
                        policy_session,
                        tss_esapi::handles::AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(cmd("PolicySecret (endorsement)"))?;
            self.ctx.set_sessions((Some(hmac), Some(policy), None));
            let released = self.ctx.activate_credential(ak.handle, ek, blob, secret);
            self.ctx.clear_sessions();
            released.map(|d| d.value().to_vec()).map_err(refused("ActivateCredential"))
        })();
        for session in sessions {
            self.flush(ts_session_handle(session));
        }
        result
    }

    /// Releases a loaded attestation key.
    pub fn release_attestation_key(&mut self, ak: AttestationKey) {
        self.flush(ak.handle);
        self.flush(ak.ek);
    }

    /// The EK certificate (DER) from the TPM's NV storage: RSA-2048 first, then ECC P-256/P-384.
    /// `None` when the manufacturer provisioned none.
    pub fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, TpmError> {
        for alg in [
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        ] {
            if let Ok(cert) = ek::retrieve_ek_pubcert(&mut self.ctx, alg)
                && !cert.is_empty()
            {
                return Ok(Some(cert));
            }
        }
        Ok(None)
    }

    /// Quotes `selection` with `qualifying_data` (≤ 64 bytes: the verifier's nonce and whatever
    /// it binds), returning the evidence in standard encodings plus the PCR values.
    pub fn quote(
        &mut self,
        ak: &AttestationKey,
        qualifying_data: &[u8],
        selection: &PcrSelection,
    ) -> Result<QuoteEvidence, TpmError> {
        let data = ts::Data::try_from(qualifying_data.to_vec()).map_err(|_| {
            TpmError::Invalid(format!("qualifying data is {} bytes; at most 64", qualifying_data.len()))
        })?;
        let list = pcr_selection_list(selection)?;
        let (attest, signature) = self
            .with_empty_password(|ctx| ctx.quote(ak.handle, data, ts::SignatureScheme::Null, list))
            .map_err(cmd("Quote"))?;
        let pcr_values = self.pcr_read(selection)?;
        Ok(QuoteEvidence {
            attest: attest.marshall().map_err(cmd("marshalling TPMS_ATTEST"))?,
            signature: signature.marshall().map_err(cmd("marshalling TPMT_SIGNATURE"))?,
            ak_public: ak.public.clone(),
            ek_public: ak.ek_public.clone(),
            pcr_values,
        })
    }

    /// Defines the anti-rollback NV counter at `index` (owner-authorized, 8 bytes) if it does
    /// not exist yet.
    pub fn counter_define(&mut self, index: u32) -> Result<(), TpmError> {
        let nv_index =
            NvIndexTpmHandle::new(index).map_err(|_| TpmError::Invalid(format!("0x{index:08x} is not an NV index")))?;
        if self.counter_handle(index).is_ok() {
            return Ok(());
        }
        let attrs = NvIndexAttributesBuilder::new()
            .with_nv_index_type(tss_esapi::constants::NvIndexType::Counter)
            .with_owner_write(true)
            .with_owner_read(true)
            .with_no_da(true)
            .build()
            .map_err(cmd("NV attributes"))?;
        self.define_8_byte_index(nv_index, attrs, "NV_DefineSpace")
    }

    /// Defines an 8-byte owner index (counter or bit field) with `attrs`; `what` names the
    /// command in an error.
    fn define_8_byte_index(
        &mut self,
        nv_index: NvIndexTpmHandle,
        attrs: tss_esapi::attributes::NvIndexAttributes,
        what: &'static str,
    ) -> Result<(), TpmError> {
        let public = ts::NvPublicBuilder::new()
            .with_nv_index(nv_index)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(8)
            .build()
            .map_err(cmd("NV public"))?;
        self.with_empty_password(|ctx| ctx.nv_define_space(Provision::Owner, None, public))
            .map(|_| ())
            .map_err(cmd(what))
    }

    /// Whether an 8-byte index is defined *and* written (a counter or bit field cannot be read
    /// before its first write): `false` for either "not there" case, an error when the TPM
    /// could not be asked.
    fn nv_written(&mut self, index: u32) -> Result<bool, TpmError> {
        if !self.nv_defined(index)? {
            return Ok(false);
        }
        let handle = self.counter_handle(index)?;
        let (public, _) =
            self.ctx.execute_without_session(|ctx| ctx.nv_read_public(handle)).map_err(cmd("NV_ReadPublic"))?;
        Ok(public.attributes().written())
    }

    fn counter_handle(&mut self, index: u32) -> Result<tss_esapi::handles::NvIndexHandle, TpmError> {
        let nv_index =
            NvIndexTpmHandle::new(index).map_err(|_| TpmError::Invalid(format!("0x{index:08x} is not an NV index")))?;
        self.ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(nv_index)))
            .map(Into::into)
            .map_err(cmd("TR_FromTPMPublic (NV counter)"))
    }

    /// Increments the counter by one. The TPM guarantees it never decreases.
    pub fn counter_increment(&mut self, index: u32) -> Result<u64, TpmError> {
        let handle = self.counter_handle(index)?;
        self.with_empty_password(|ctx| ctx.nv_increment(NvAuth::Owner, handle)).map_err(cmd("NV_Increment"))?;
        self.counter_read(index)
    }

    /// The counter's value, telling apart "not there" from a failure: `None` when the index
    /// is not defined or was never incremented (a counter cannot be read before its first
    /// increment); an error when the TPM could not be asked.
    pub fn counter_value(&mut self, index: u32) -> Result<Option<u64>, TpmError> {
        if !self.nv_written(index)? {
            return Ok(None);
        }
        self.counter_read(index).map(Some)
    }

    /// Reads the counter.
    pub fn counter_read(&mut self, index: u32) -> Result<u64, TpmError> {
        let handle = self.counter_handle(index)?;
        let data = self
            .with_empty_password(|ctx| ctx.nv_read(NvAuth::Owner, handle, 8, 0))
            .map_err(cmd("NV_Read (counter)"))?;
        let bytes: [u8; 8] = data.value().try_into().map_err(|_| {
            TpmError::Invalid(format!("counter read returned {} bytes, expected 8", data.value().len()))
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Tries to overwrite the counter with arbitrary bytes (which a TPM must refuse for a
    /// counter index). Exists so tests can prove the refusal.
    pub fn danger_counter_write(&mut self, index: u32, value: u64) -> Result<(), TpmError> {
        let handle = self.counter_handle(index)?;
        let data = ts::MaxNvBuffer::try_from(value.to_be_bytes().to_vec()).map_err(cmd("NV buffer"))?;
        self.with_empty_password(|ctx| ctx.nv_write(NvAuth::Owner, handle, data, 0)).map_err(cmd("NV_Write (counter)"))
    }

    /// Defines the anti-rollback floor ([`crate::floor::FLOOR_INDEX`], an NV bit field) if it
    /// does not exist, and writes it (no bits: floor 0) if it was never written: PolicyNV
    /// cannot read an unwritten index, and a release policy with a floor assertion needs it.
    /// Returns the floor.
    pub fn floor_provision(&mut self) -> Result<u64, TpmError> {
        self.bit_field_provision(crate::floor::FLOOR_INDEX, "NV_SetBits (floor)")
    }

    /// The anti-rollback floor: `None` when its index is not defined or never written.
    pub fn floor(&mut self) -> Result<Option<u64>, TpmError> {
        self.bit_field(crate::floor::FLOOR_INDEX)
    }

    /// Raises the anti-rollback floor to `version` (never lowers it: the TPM only sets bits).
    /// Returns the floor afterwards. Only after `version` booted good: from then on the TPM
    /// refuses every release policy older than `version`.
    pub fn floor_raise(&mut self, version: u64) -> Result<u64, TpmError> {
        self.bit_field_raise(crate::floor::FLOOR_INDEX, version, "NV_SetBits (floor)")
    }

    /// Defines and writes the PCR-policy key generation ([`crate::floor::KEY_GENERATION_INDEX`])
    /// like [`Tpm::floor_provision`]; the node keys' policy checks it, so it must exist before
    /// they are sealed or unsealed. Returns the generation.
    pub fn key_generation_provision(&mut self) -> Result<u64, TpmError> {
        self.bit_field_provision(crate::floor::KEY_GENERATION_INDEX, "NV_SetBits (key generation)")
    }

    /// The PCR-policy key generation: `None` when its index is not defined or never written.
    pub fn key_generation(&mut self) -> Result<Option<u64>, TpmError> {
        self.bit_field(crate::floor::KEY_GENERATION_INDEX)
    }

    /// Raises the PCR-policy key generation to `generation` (never lowers it). From then on
    /// every object sealed at an older generation is refused by the TPM, whatever policy is
    /// presented with it.
    pub fn key_generation_raise(&mut self, generation: u64) -> Result<u64, TpmError> {
        self.bit_field_raise(crate::floor::KEY_GENERATION_INDEX, generation, "NV_SetBits (key generation)")
    }

    /// `set_bits`: the operation named in an error.
    fn bit_field_provision(&mut self, index: u32, set_bits: &'static str) -> Result<u64, TpmError> {
        if let Some(value) = self.bit_field(index)? {
            return Ok(value);
        }
        let nv_index =
            NvIndexTpmHandle::new(index).map_err(|_| TpmError::Invalid(format!("0x{index:08x} is not an NV index")))?;
        if !self.nv_defined(index)? {
            let attrs = tss_esapi::attributes::NvIndexAttributes(crate::floor::ATTRIBUTES);
            self.define_8_byte_index(nv_index, attrs, "NV_DefineSpace (bit field)")?;
        }
        let handle = self.counter_handle(index)?;
        self.with_empty_password(|ctx| ctx.nv_set_bits(NvAuth::Owner, handle, 0)).map_err(cmd(set_bits))?;
        self.bit_field(index).map(|f| f.unwrap_or(0))
    }

    fn bit_field(&mut self, index: u32) -> Result<Option<u64>, TpmError> {
        if !self.nv_written(index)? {
            return Ok(None);
        }
        self.counter_read(index).map(|bits| Some(crate::floor::floor_of_bits(bits)))
    }

    fn bit_field_raise(&mut self, index: u32, value: u64, set_bits: &'static str) -> Result<u64, TpmError> {
        use crate::floor::{MAX_VERSION, bits_of_floor};
        let bits = bits_of_floor(value)
            .ok_or_else(|| TpmError::Invalid(format!("{value} is beyond the bit field's range (1..={MAX_VERSION})")))?;
        self.bit_field_provision(index, set_bits)?;
        let handle = self.counter_handle(index)?;
        self.with_empty_password(|ctx| ctx.nv_set_bits(NvAuth::Owner, handle, bits)).map_err(cmd(set_bits))?;
        self.bit_field(index)?
            .ok_or_else(|| TpmError::Invalid(format!("NV index 0x{index:08x} reads as unwritten after NV_SetBits")))
    }

    /// The floor index's name as the TPM computes it (tests compare it with the offline one).
    pub fn floor_index_name(&mut self) -> Result<Vec<u8>, TpmError> {
        let handle = self.counter_handle(crate::floor::FLOOR_INDEX)?;
        self.ctx.tr_get_name(handle.into()).map(|n| n.value().to_vec()).map_err(cmd("TR_GetName (floor)"))
    }

    /// The key-generation index's name as the TPM computes it.
    pub fn key_generation_index_name(&mut self) -> Result<Vec<u8>, TpmError> {
        let handle = self.counter_handle(crate::floor::KEY_GENERATION_INDEX)?;
        self.ctx.tr_get_name(handle.into()).map(|n| n.value().to_vec()).map_err(cmd("TR_GetName (key generation)"))
    }

    /// PolicyNV in `session`: the floor is at most `version` (unsigned, 8 bytes).
    fn policy_floor(&mut self, session: PolicySession, version: u64) -> Result<(), TpmError> {
        self.policy_bit_field(
            session,
            crate::floor::FLOOR_INDEX,
            version,
            "PolicyNV (the anti-rollback floor is above this release)",
        )
    }

    /// PolicyNV in `session`: the bit field at `index` is at most `value`'s bits.
    fn policy_bit_field(
        &mut self,
        session: PolicySession,
        index: u32,
        value: u64,
        refusal: &'static str,
    ) -> Result<(), TpmError> {
        use crate::floor::{TPM_EO_UNSIGNED_LE, operand_for_release};
        let operand = operand_for_release(value)
            .ok_or_else(|| TpmError::Invalid(format!("{value} is beyond the bit field's range")))?;
        let operand = ts::Digest::try_from(operand.to_vec()).map_err(cmd("PolicyNV operand"))?;
        let what = if index == crate::floor::FLOOR_INDEX {
            "the anti-rollback floor"
        } else {
            "the PCR-policy key generation"
        };
        let handle = self
            .counter_handle(index)
            .map_err(|_| TpmError::Invalid(format!("{what} (NV index 0x{index:08x}) is not defined in this TPM")))?;
        self.with_empty_password(|ctx| ctx.policy_nv(NvAuth::Owner, handle, session, operand, 0, TPM_EO_UNSIGNED_LE))
            .map_err(refused(refusal))
    }

    /// Whether an NV index is defined.
    fn nv_defined(&mut self, index: u32) -> Result<bool, TpmError> {
        let (listed, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, index, 1))
            .map_err(cmd("GetCapability (NV indices)"))?;
        Ok(matches!(&listed, ts::CapabilityData::Handles(list)
            if list.iter().any(|h| tss_esapi::tss2_esys::TPM2_HANDLE::from(*h) == index)))
    }

    /// Reads an NV index in full (e.g. a certificate).
    pub fn nv_read_full(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let nv_index =
            NvIndexTpmHandle::new(index).map_err(|_| TpmError::Invalid(format!("0x{index:08x} is not an NV index")))?;
        let handle = self.counter_handle(index)?;
        self.with_empty_password(|ctx| nv::read_full(ctx, NvAuth::NvIndex(handle), nv_index)).map_err(cmd("NV_Read"))
    }
}

/// Splits stored AK bytes into the private blob and the public area; `None` when malformed.
fn split_stored_ak(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let private = bytes.get(4..4usize.checked_add(len)?)?;
    let public = bytes.get(4 + len..)?;
    (!public.is_empty()).then_some((private, public))
}

fn ts_session_handle(session: AuthSession) -> ObjectHandle {
    tss_esapi::handles::SessionHandle::from(session).into()
}
