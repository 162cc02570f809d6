//! The EK certificate chain's use constraints, on chains an independent implementation (the
//! `openssl` command) issued: a CA's path length constraint, an issuer's key usage, and the EK
//! certificate's own basic constraints, key usage and extended key usage. The well-formed chain
//! passes; each chain that breaks one constraint fails naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::Path;
use std::process::Command;

use sovereign_measured_boot::ekcert::{trust_store_from_pem, verify_ek_certificate};
use sovereign_measured_boot::structures::RsaStoragePublic;

const EK_PURPOSE: &str = "extendedKeyUsage=2.23.133.8.1";

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl (apt install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issues `name.pem` for `key`, signed by `issuer` (or self-signed), with `extensions`.
fn issue(dir: &Path, name: &str, key: &str, issuer: Option<(&str, &str)>, extensions: &[&str]) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions.join("\n") + "\n").unwrap();
    let csr = format!("{name}.csr");
    openssl(dir, &["req", "-new", "-key", key, "-subj", &format!("/CN={name}"), "-out", &csr]);
    let ext = format!("{name}.ext");
    let out = format!("{name}.pem");
    let mut args = vec!["x509", "-req", "-in", &csr, "-days", "30", "-extfile", &ext, "-out", &out];
    match issuer {
        Some((cert, key)) => args.extend(["-CA", cert, "-CAkey", key, "-CAcreateserial"]),
        None => args.extend(["-signkey", key]),
    }
    openssl(dir, &args);
}

/// Root → intermediate → EK certificate, with the given extensions; the verdict.
fn chain(root: &[&str], intermediate: &[&str], ek: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for key in ["ca.key", "ek.key"] {
        openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key]);
    }
    issue(d, "root", "ca.key", None, root);
    issue(d, "intermediate", "ca.key", Some(("root.pem", "ca.key")), intermediate);
    issue(d, "ek", "ek.key", Some(("intermediate.pem", "ca.key")), ek);
    let der = {
        openssl(d, &["x509", "-in", "ek.pem", "-outform", "DER", "-out", "ek.der"]);
        std::fs::read(d.join("ek.der")).unwrap()
    };
    let modulus = openssl(d, &["rsa", "-in", "ek.key", "-noout", "-modulus"]);
    let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let ek_key = RsaStoragePublic {
        attributes: 0,
        symmetric_bits: 128,
        key_bits: 2048,
        exponent: 65537,
        modulus,
        marshalled: vec![],
    };
    let mut pem = std::fs::read_to_string(d.join("root.pem")).unwrap();
    pem.push_str(&std::fs::read_to_string(d.join("intermediate.pem")).unwrap());
    let store = trust_store_from_pem(pem.as_bytes()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    verify_ek_certificate(&der, &store, &ek_key, now)
}

const CA: &[&str] = &["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"];
const EK: &[&str] = &["basicConstraints=critical,CA:FALSE", "keyUsage=critical,keyEncipherment", EK_PURPOSE];

#[test]
fn a_chain_within_every_constraint_passes() {
    let root = ["basicConstraints=critical,CA:TRUE,pathlen:1", "keyUsage=critical,keyCertSign"];
    let verdict = chain(&root, CA, EK).unwrap();
    assert_eq!(verdict, "CN=ek <- CN=intermediate <- CN=root");
    // Constraints that are not stated do not refuse: a CA without key usage, an EK certificate
    // without key usage or extended key usage.
    chain(
        &["basicConstraints=critical,CA:TRUE"],
        &["basicConstraints=critical,CA:TRUE"],
        &["basicConstraints=CA:FALSE"],
    )
    .unwrap();
}

#[test]
fn a_root_whose_path_length_admits_no_intermediate_fails() {
    let root = ["basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign"];
    let err = chain(&root, CA, EK).unwrap_err();
    assert_eq!(err, "\"CN=root\" allows 0 CA certificates below it (pathLenConstraint), the chain has 1");
}

#[test]
fn an_issuer_whose_key_may_not_sign_certificates_fails() {
    let intermediate = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,digitalSignature"];
    let err = chain(CA, &intermediate, EK).unwrap_err();
    assert_eq!(err, "\"CN=intermediate\" issues certificates but its key usage lacks keyCertSign");
    let not_ca = ["basicConstraints=critical,CA:FALSE"];
    assert!(chain(CA, &not_ca, EK).unwrap_err().contains("is not a CA"));
}

#[test]
fn an_ek_certificate_that_is_a_ca_or_for_another_use_fails() {
    let as_ca = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyEncipherment", EK_PURPOSE];
    assert!(chain(CA, CA, &as_ca).unwrap_err().contains("the EK certificate is a CA certificate"));
    let signing = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", EK_PURPOSE];
    assert!(chain(CA, CA, &signing).unwrap_err().contains("does not include keyEncipherment"));
    let server =
        ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,keyEncipherment", "extendedKeyUsage=serverAuth"];
    assert!(chain(CA, CA, &server).unwrap_err().contains("does not include tcg-kp-EKCertificate (2.23.133.8.1)"));
}
