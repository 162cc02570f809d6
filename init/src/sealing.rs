//! Which sealed copy of the node keys a boot opens — under which PCR-policy key and key
//! generation — and what a PCR-policy key rotation does with the copies. Pure: the sealed
//! objects are told apart by their `authPolicy` (PolicyAuthorize(key) then PolicyNV(key
//! generation ≤ g)), computed offline for each trusted key at each generation the TPM still
//! honours; the TPM re-checks all of it at the unseal.

use sovereign_measured_boot::floor::MAX_VERSION;
use sovereign_measured_boot::policy::PolicyKey;
use sovereign_measured_boot::sealed::SealedBlob;

/// The PCR-policy keys a boot trusts: this release's key, and during a rotation the retiring
/// key with the generation the node keys are resealed at.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    /// The key this release's PCR policy is signed with.
    pub current: PolicyKey,
    /// The retiring key and the generation to reseal at (from a verified rotation).
    pub retiring: Option<(PolicyKey, u64)>,
}

/// Which trusted key a sealed object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// This release's key.
    Current,
    /// The retiring key of a rotation.
    Retiring,
}

/// A sealed object that a trusted key opens at a generation the TPM still honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opener {
    /// Its place in the key area.
    pub index: usize,
    /// Whose.
    pub role: KeyRole,
    /// Its key generation.
    pub generation: u64,
}

/// The trusted key and generation whose sealing policy is `auth_policy`, among generations
/// `tpm_generation..=64` (older ones the TPM refuses).
pub fn identify(auth_policy: &[u8; 32], keys: &TrustedKeys, tpm_generation: u64) -> Option<(KeyRole, u64)> {
    let mut candidates = vec![(KeyRole::Current, &keys.current)];
    if let Some((retiring, _)) = &keys.retiring {
        candidates.push((KeyRole::Retiring, retiring));
    }
    candidates.into_iter().find_map(|(role, key)| {
        (tpm_generation..=MAX_VERSION)
            .find(|g| key.sealing_policy(*g).is_ok_and(|p| p.0 == *auth_policy))
            .map(|g| (role, g))
    })
}

/// The sealed object to open: one of this release's key first, else the retiring key's.
/// `auth_policies` are the key area's objects' `authPolicy` digests, in order.
pub fn choose(auth_policies: &[[u8; 32]], keys: &TrustedKeys, tpm_generation: u64) -> Result<Opener, String> {
    let openers: Vec<Opener> = auth_policies
        .iter()
        .enumerate()
        .filter_map(|(index, p)| {
            identify(p, keys, tpm_generation).map(|(role, generation)| Opener { index, role, generation })
        })
        .collect();
    openers
        .iter()
        .find(|o| o.role == KeyRole::Current)
        .or_else(|| openers.iter().find(|o| o.role == KeyRole::Retiring))
        .copied()
        .ok_or_else(|| {
            let rotating = if keys.retiring.is_some() { " (nor by the retiring key of its rotation)" } else { "" };
            format!(
                "none of the {} sealed copies of the node keys is sealed to this release's PCR-policy key{rotating} at a key generation the TPM still honours (≥ {tpm_generation})",
                auth_policies.len()
            )
        })
}

/// After opening `opened`: the key area to write now, if any — a rotation reseals the node
/// keys to the new key (`resealed`, at the rotation's generation) and keeps the retiring
/// key's copy until the release is good.
pub fn after_rotation(opened: &SealedBlob, resealed: SealedBlob) -> Vec<SealedBlob> {
    vec![resealed, opened.clone()]
}

/// Once the release is good: the generation to raise the TPM's to and the one copy to keep,
/// when the key area holds a copy of this release's key sealed above the TPM's generation
/// (a rotation's reseal, or a boot cut after it). `None`: nothing to retire.
pub fn retirement(
    blobs: &[SealedBlob],
    auth_policies: &[[u8; 32]],
    keys: &TrustedKeys,
    tpm_generation: u64,
) -> Option<(u64, SealedBlob)> {
    let current = TrustedKeys { current: keys.current.clone(), retiring: None };
    auth_policies.iter().zip(blobs).find_map(|(p, blob)| match identify(p, &current, tpm_generation) {
        // Above the TPM's generation: raise it, then keep this copy alone. At it (a cut came
        // after the raise): the other copies are of older generations, dead — drop them.
        Some((KeyRole::Current, g)) if g > tpm_generation || (g == tpm_generation && g > 0 && blobs.len() > 1) => {
            Some((g, blob.clone()))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(n: u8) -> PolicyKey {
        PolicyKey::new(*p256::ecdsa::SigningKey::from_slice(&[n; 32]).unwrap().verifying_key())
    }

    fn policy(k: &PolicyKey, g: u64) -> [u8; 32] {
        k.sealing_policy(g).unwrap().0
    }

    #[test]
    fn the_current_key_wins_the_retiring_key_bridges_and_dead_generations_are_skipped() {
        let (old, new) = (key(1), key(2));
        let plain = TrustedKeys { current: old.clone(), retiring: None };
        let rotating = TrustedKeys { current: new.clone(), retiring: Some((old.clone(), 1)) };
        // Before a rotation: the old key's copy at generation 0.
        assert_eq!(
            choose(&[policy(&old, 0)], &plain, 0).unwrap(),
            Opener { index: 0, role: KeyRole::Current, generation: 0 }
        );
        // The rotating release bridges through it.
        assert_eq!(choose(&[policy(&old, 0)], &rotating, 0).unwrap().role, KeyRole::Retiring);
        // Resealed: the new copy first, taken by the rotating release; the old release still
        // opens the old copy (a failed trial falls back to it).
        let both = [policy(&new, 1), policy(&old, 0)];
        assert_eq!(choose(&both, &rotating, 0).unwrap(), Opener { index: 0, role: KeyRole::Current, generation: 1 });
        assert_eq!(choose(&both, &plain, 0).unwrap(), Opener { index: 1, role: KeyRole::Current, generation: 0 });
        // Generation raised to 1: the old copy is dead for everyone.
        assert!(choose(&[policy(&old, 0)], &plain, 1).unwrap_err().contains("≥ 1"));
        assert!(choose(&[policy(&old, 0)], &rotating, 1).unwrap_err().contains("retiring key"));
        assert_eq!(choose(&both, &rotating, 1).unwrap().index, 0);
        // An unknown key opens nothing.
        assert!(choose(&[policy(&key(3), 0)], &rotating, 0).is_err());
    }

    #[test]
    fn retirement_raises_to_the_new_copy_and_keeps_only_it() {
        let (old, new) = (key(1), key(2));
        let rotating = TrustedKeys { current: new.clone(), retiring: Some((old.clone(), 1)) };
        let blob = |n: u8| SealedBlob { public: vec![n], private: vec![n] };
        let (b_new, b_old) = (blob(2), blob(1));
        let both = [policy(&new, 1), policy(&old, 0)];
        let blobs = after_rotation(&b_old, b_new.clone());
        assert_eq!(retirement(&blobs, &both, &rotating, 0), Some((1, b_new.clone())));
        // Cut after the raise, before the old copy was dropped: drop it now.
        assert_eq!(retirement(&blobs, &both, &rotating, 1), Some((1, b_new.clone())));
        // Done: nothing to do.
        assert_eq!(retirement(&[b_new], &both[..1], &rotating, 1), None);
        // A release without a rotation, on a node never rotated: nothing to do.
        let plain = TrustedKeys { current: old.clone(), retiring: None };
        assert_eq!(retirement(std::slice::from_ref(&b_old), &[policy(&old, 0)], &plain, 0), None);
        // The old release after a failed rotating trial: its copy is not above the TPM's
        // generation; the new copy is not its key's. It keeps both (the rotation may be tried
        // again).
        assert_eq!(retirement(&blobs, &both, &plain, 0), None);
    }
}
