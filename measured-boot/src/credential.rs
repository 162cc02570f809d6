//! TPM2_MakeCredential in pure Rust, on the verifier's side: encrypts a credential (a random
//! challenge) so that only a TPM holding the endorsement key *and* a loaded object with the
//! given name can release it (TPM2_ActivateCredential). When the appliance answers with the
//! challenge, the attestation key that signed its quote is proven to live in the TPM whose
//! endorsement key the EK certificate names — the qualified-name field inside the quote alone
//! cannot prove that, because the AK itself signs it.
//!
//! Follows TPM 2.0 Library Part 1 §24 (protected storage: credential protection): an RSA-OAEP
//! (SHA-256, label `"IDENTITY\0"`) encrypted seed; `KDFa(seed, "STORAGE", name)` → AES-CFB key;
//! `KDFa(seed, "INTEGRITY")` → HMAC key over `encIdentity || name`.
//!
//! Pure apart from the randomness the caller passes in. Must never: use a seed or credential
//! twice, or accept an endorsement key it cannot model (the decoder refuses it).

use aes::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use rand_core::CryptoRngCore;
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::Sha256;

use crate::structures::RsaStoragePublic;

/// What a verifier sends (`TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET` contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `TPM2B_DIGEST(outerHMAC) || encIdentity`.
    pub credential_blob: Vec<u8>,
    /// The RSA-OAEP encrypted seed.
    pub encrypted_secret: Vec<u8>,
}

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("making the credential: {0}")]
pub struct CredentialError(String);

/// SP 800-108 counter-mode KDF with HMAC-SHA-256, as TPM 2.0 defines `KDFa`.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// Makes a credential carrying `secret` (at most 32 bytes) for the object called `object_name`
/// under the endorsement key `ek`.
pub fn make_credential(
    ek: &RsaStoragePublic,
    object_name: &[u8],
    secret: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Credential, CredentialError> {
    if secret.is_empty() || secret.len() > 32 {
        return Err(CredentialError(format!("the credential is {} bytes; it must be 1 to 32", secret.len())));
    }
    if ek.symmetric_bits != 128 {
        return Err(CredentialError(format!(
            "EK symmetric key of {} bits; only AES-128 is modelled",
            ek.symmetric_bits
        )));
    }
    let public = RsaPublicKey::new(BigUint::from_bytes_be(&ek.modulus), BigUint::from(ek.exponent))
        .map_err(|e| CredentialError(format!("EK public key: {e}")))?;
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let encrypted_secret = public
        .encrypt(rng, Oaep::new_with_label::<Sha256, _>("IDENTITY\0"), &seed)
        .map_err(|e| CredentialError(format!("RSA-OAEP: {e}")))?;
    let sym_key = kdfa(&seed, "STORAGE", object_name, &[], 128);
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut enc_identity = (secret.len() as u16).to_be_bytes().to_vec();
    enc_identity.extend_from_slice(secret);
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
        .map_err(|e| CredentialError(format!("AES-CFB: {e}")))?
        .encrypt(&mut enc_identity);
    let mut mac = <Hmac<Sha256>>::new_from_slice(&hmac_key).expect("HMAC takes keys of any length");
    mac.update(&enc_identity);
    mac.update(object_name);
    let outer = mac.finalize().into_bytes();
    let mut credential_blob = (outer.len() as u16).to_be_bytes().to_vec();
    credential_blob.extend_from_slice(&outer);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(Credential { credential_blob, encrypted_secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_lengths_and_labels() {
        // Independent check of the construction: one block equals HMAC(key, 1 || label 0 || u || v || bits).
        let key = [7u8; 32];
        let mut mac = <Hmac<Sha256>>::new_from_slice(&key).unwrap();
        mac.update(&1u32.to_be_bytes());
        mac.update(b"STORAGE\0");
        mac.update(b"name");
        mac.update(&128u32.to_be_bytes());
        let block = mac.finalize().into_bytes();
        assert_eq!(kdfa(&key, "STORAGE", b"name", &[], 128), block[..16].to_vec());
        assert_eq!(kdfa(&key, "INTEGRITY", &[], &[], 512).len(), 64);
        assert_ne!(kdfa(&key, "INTEGRITY", &[], &[], 256), kdfa(&key, "STORAGE", &[], &[], 256));
    }
}
