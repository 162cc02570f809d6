//! `sovereign cert`: role certificates and revocation lists from the admin root.

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use sovereign_canonical::now_ms;
use std::fs;
use std::process::ExitCode;

use crate::args::*;
use crate::{public_key, read_hex32};

pub(crate) fn cert(cmd: CertCommand) -> anyhow::Result<ExitCode> {
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
