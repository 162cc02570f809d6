//! Offline check of the role certificates and revocation lists a compliance bundle carries
//! (`role-certificates/`): every one signed by the admin root the auditor pins (without one,
//! every file there fails as not evaluated and no decision is checked), and every
//! policy decision in the log made for a principal holding a certificate there that granted
//! the decision's roles, unexpired at the decision's time and not revoked by the revocation
//! list the node held then. Plugged into `verify_bundle_with` as the checker of that section.
//!
//! Files (names fit a ustar header: the first 16 bytes of the SHA-256 of the JSON, in hex):
//! `role-certificates/cert-<hash>.json` (a `RoleCertificate`) and
//! `role-certificates/revocations-v<version>-<hash>.json` (`{"installed_ms", "list"}`: the list
//! and when the node installed it, the node's claim under its bundle signature).

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use sovereign_audit::Entry;
use sovereign_audit::bundle::SectionChecker;
use sovereign_audit::verify::{Report, fail};
use sovereign_governance::signed::{InstalledRevocations, RevocationList, RoleCertificate};

/// Checks role certificates and revocation lists against the pinned admin root.
#[derive(Debug, Clone, Default)]
pub struct RoleChecker {
    /// The admin root key (`None`: nothing can be checked, every file fails as not evaluated).
    pub admin: Option<VerifyingKey>,
}

impl SectionChecker for RoleChecker {
    fn sections(&self) -> Vec<&'static str> {
        vec!["role-certificates"]
    }

    fn check(&self, report: &mut Report, entries: &[(String, Entry)], files: &BTreeMap<String, Vec<u8>>) {
        let mut certificates: Vec<RoleCertificate> = Vec::new();
        let mut lists: Vec<InstalledRevocations> = Vec::new();
        let mut failures = Vec::new();
        let mut count = 0u64;
        for (name, bytes) in files.iter().filter(|(n, _)| n.starts_with("role-certificates/")) {
            count += 1;
            let Some(admin) = &self.admin else {
                failures.push(fail(name.as_str(), "not evaluated: no admin root key is pinned (--admin-key)"));
                continue;
            };
            let file = name.trim_start_matches("role-certificates/");
            if file.starts_with("revocations-") {
                match serde_json::from_slice::<InstalledRevocations>(bytes) {
                    Err(e) => failures.push(fail(name.as_str(), format!("not a revocation list: {e}"))),
                    Ok(installed) => match installed.list.verify(admin, 0) {
                        Err(e) => failures.push(fail(name.as_str(), e.to_string())),
                        Ok(()) => lists.push(installed),
                    },
                }
            } else {
                match serde_json::from_slice::<RoleCertificate>(bytes) {
                    Err(e) => failures.push(fail(name.as_str(), format!("not a role certificate: {e}"))),
                    // Signature and issuer only here; expiry and revocation per decision below.
                    Ok(cert) => match cert.verify(admin, &RevocationList::default(), 0) {
                        Err(e) => failures.push(fail(name.as_str(), e.to_string())),
                        Ok(()) => certificates.push(cert),
                    },
                }
            }
        }
        report.add(
            "role-certificates.signatures",
            count,
            failures,
            format!(
                "{} role certificates and {} revocation lists signed by the admin root",
                certificates.len(),
                lists.len()
            ),
        );

        // Without the admin root the auditor did not ask for the roles to be checked (as with
        // attestation roots): any file in the section has failed above, and nothing here passes.
        let Some(admin) = &self.admin else {
            return;
        };
        let mut failures = Vec::new();
        let mut decisions = 0u64;
        for (place, entry, evidence) in crate::decisions::decision_entries(entries) {
            decisions += 1;
            let evidence = match evidence {
                Ok(e) => e,
                Err(why) => {
                    failures.push(fail(place, why));
                    continue;
                }
            };
            let at = entry.timestamp_ms;
            // The list in force: the newest the node had installed by then.
            let Some(in_force) = lists
                .iter()
                .filter(|l| l.installed_ms <= at)
                .max_by_key(|l| (l.list.version, l.installed_ms))
                .map(|l| &l.list)
            else {
                failures.push(fail(place, "no revocation list in the bundle was installed before this decision"));
                continue;
            };
            let input = &evidence.input;
            let held = certificates.iter().any(|c| {
                hex::encode(c.operator) == input.principal
                    && input.roles.iter().all(|r| c.roles.contains(r))
                    && c.verify(admin, in_force, at).is_ok()
            });
            if !held {
                failures.push(fail(
                    place,
                    format!(
                        "no certificate in the bundle granted {:?} to {} at {at} under revocation list version {}",
                        input.roles, input.principal, in_force.version
                    ),
                ));
            }
        }
        report.add(
            "decisions.roles",
            decisions,
            failures,
            "every decision's roles come from an admin-signed certificate valid then, under the revocation list in force",
        );
    }
}
