//! Is this boot the signed release? The last comparison before the keys are unsealed: the live
//! PCRs against the signed PCR policy, and the kernel command line the kernel actually received
//! (`/proc/cmdline`) against the one the release signed in its manifest.
//!
//! Both are checked and both are named in one refusal: a boot-path command line (boot-loader
//! load options, firmware) changes PCR 12 *and* `/proc/cmdline`, and the operator should see
//! both. The TPM enforces the PCRs again at unseal; the command-line check holds even if a
//! policy were ever signed without PCR 12.
//!
//! Pure: no IO. Must never: accept a command line that differs in any byte other than the
//! kernel's trailing newline, or report a match for a PCR the TPM did not return.

use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::pcr::PcrValues;

/// The part of the release's reference values PID 1 reads: the manifest they were made for.
#[derive(serde::Deserialize)]
struct ReferenceFor {
    manifest_sha256: String,
}

/// Checks the reference values found on the ESP before they are handed to the runtime (whose
/// compliance bundles carry them): signed by the release key, for the manifest this boot
/// verified. Returns why not, in one line. The auditor checks them again; this keeps another
/// release's values, or unsigned ones, out of the node's signed bundles.
pub fn reference_values_refusal(
    values: &[u8],
    signature: &[u8],
    release_key: &ed25519_dalek::VerifyingKey,
    manifest: &[u8],
) -> Option<String> {
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return Some(format!("the signature is {} bytes, not an Ed25519 signature's 64", signature.len()));
    };
    if release_key.verify_strict(values, &signature).is_err() {
        return Some("not signed by the release key".into());
    }
    let made_for = match serde_json::from_slice::<ReferenceFor>(values) {
        Ok(r) => r.manifest_sha256,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let booted = hex::encode(Sha256::digest(manifest));
    (made_for != booted).then(|| {
        format!("made for manifest {made_for}, this boot verified manifest {booted} (another release's values)")
    })
}

/// Compares the live PCRs with the signed policy and `/proc/cmdline` with the signed command
/// line; returns the one-line reason to refuse, naming every PCR that differs and the command
/// line, or `None` when this boot is the signed release.
pub fn refusal(policy: &PcrValues, live: &PcrValues, proc_cmdline: &str, signed_cmdline: &str) -> Option<String> {
    let differing: Vec<String> = policy
        .0
        .iter()
        .filter(|(pcr, value)| live.get(**pcr) != Some(*value))
        .map(|(pcr, _)| format!("PCR {pcr}"))
        .collect();
    let booted = proc_cmdline.strip_suffix('\n').unwrap_or(proc_cmdline);
    let cmdline_differs = booted != signed_cmdline;
    let pcrs = match differing.len() {
        0 => None,
        1 => Some(format!("{} differs from the signed PCR policy", differing[0])),
        _ => Some(format!("{} differ from the signed PCR policy", differing.join(", "))),
    };
    match (cmdline_differs, pcrs) {
        (false, None) => None,
        (false, Some(pcrs)) => Some(format!("{pcrs}; keys stay sealed")),
        (true, pcrs) => Some(format!(
            "the kernel command line is not the signed one: booted with {booted:?}, the release signed \
             {signed_cmdline:?}{}; keys stay sealed",
            pcrs.map(|p| format!(" ({p})")).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod reference_tests {
    use super::reference_values_refusal;
    use ed25519_dalek::{Signer as _, SigningKey};
    use sha2::{Digest as _, Sha256};

    fn values(manifest: &[u8]) -> Vec<u8> {
        format!(r#"{{"version":3,"manifest_sha256":"{}","pcrs":{{}}}}"#, hex::encode(Sha256::digest(manifest)))
            .into_bytes()
    }

    #[test]
    fn values_signed_for_this_manifest_are_handed_over_and_nothing_else_is() {
        let release = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let key = release.verifying_key();
        let good = values(b"manifest");
        let sig = release.sign(&good).to_bytes();
        assert_eq!(reference_values_refusal(&good, &sig, &key, b"manifest"), None);
        let why = |v: &[u8], s: &[u8], m: &[u8]| reference_values_refusal(v, s, &key, m).unwrap_or_default();
        assert_eq!(why(&good, &other.sign(&good).to_bytes(), b"manifest"), "not signed by the release key");
        assert_eq!(why(&good, &sig[..63], b"manifest"), "the signature is 63 bytes, not an Ed25519 signature's 64");
        let mut flipped = good.clone();
        flipped[10] ^= 1;
        assert_eq!(why(&flipped, &sig, b"manifest"), "not signed by the release key");
        assert!(
            why(&good, &sig, b"another manifest").contains("another release's values"),
            "{}",
            why(&good, &sig, b"x")
        );
        let junk = b"not json".to_vec();
        assert!(why(&junk, &release.sign(&junk).to_bytes(), b"manifest").starts_with("unreadable: "));
    }
}

#[cfg(test)]
mod tests {
    use super::refusal;
    use sovereign_measured_boot::pcr::{PcrValues, Sha256Digest};

    const SIGNED: &str = "console=ttyS0,115200 panic=-1 lockdown=integrity";

    fn pcrs(values: &[(u8, u8)]) -> PcrValues {
        let mut p = PcrValues::new();
        for (pcr, byte) in values {
            p.set(*pcr, Sha256Digest([*byte; 32]));
        }
        p
    }

    fn check(live: &[(u8, u8)], cmdline: &str, expected: Option<&str>) {
        let policy = pcrs(&[(9, 1), (11, 2), (12, 0), (15, 3)]);
        let got = refusal(&policy, &pcrs(live), cmdline, SIGNED);
        match (got, expected) {
            (None, None) => {}
            (Some(g), Some(e)) => assert!(g.contains(e), "{g:?} does not contain {e:?}"),
            (g, e) => panic!("expected {e:?}, got {g:?}"),
        }
    }

    #[test]
    fn the_signed_release_passes_and_every_difference_is_named() {
        let genuine = [(9, 1), (11, 2), (12, 0), (15, 3)];
        check(&genuine, &format!("{SIGNED}\n"), None);
        check(&genuine, SIGNED, None);
        // A boot-path command line: PCR 12 and the command line, in one line.
        check(
            &[(9, 7), (11, 2), (12, 9), (15, 3)],
            "console=ttyS0 init=/bin/sh\n",
            Some(
                r#"the kernel command line is not the signed one: booted with "console=ttyS0 init=/bin/sh", the release signed "console=ttyS0,115200 panic=-1 lockdown=integrity" (PCR 9, PCR 12 differ from the signed PCR policy); keys stay sealed"#,
            ),
        );
        // The command line alone (a policy signed without PCR 12 would still refuse).
        check(&genuine, &format!("{SIGNED} lockdown=none\n"), Some("the kernel command line is not the signed one"));
        check(&genuine, &format!("{SIGNED} \n"), Some("not the signed one"));
        check(&genuine, "", Some("not the signed one"));
        // PCRs alone.
        check(&[(9, 1), (11, 5), (12, 0), (15, 3)], SIGNED, Some("PCR 11 differs from the signed PCR policy; keys"));
        // A PCR the TPM did not return is a difference, never a match.
        check(&[(9, 1), (11, 2), (15, 3)], SIGNED, Some("PCR 12 differs"));
    }
}
