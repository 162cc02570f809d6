//! The committed Secure Boot platform is what its sources say: the OVMF variable store in
//! `firmware/` is exactly Debian's empty store with the development PK, KEK and db of
//! `firmware/secure-boot/` enrolled (regenerated here with virt-fw-vars and compared byte for
//! byte), and the db certificate is the one that signs the release's UKI.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sovereign_e2e::root;

#[test]
fn the_secure_boot_variable_store_regenerates_bit_identical_from_the_committed_keys() {
    let out = tempfile::tempdir().unwrap();
    let regenerated = out.path().join("vars.fd");
    sovereign_image::build::write_secure_boot_vars(
        &root().join("firmware/secure-boot"),
        std::path::Path::new(sovereign_qemu::guest::OVMF_VARS),
        &regenerated,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let committed = std::fs::read(sovereign_qemu::guest::SECURE_BOOT_VARS).unwrap();
    assert!(
        std::fs::read(&regenerated).unwrap() == committed,
        "firmware/ovmf-vars-secureboot.fd differs from the store its keys make: run `cargo xtask firmware-vars` and re-record the profile"
    );
    // The store holds the db certificate (DER) that signs the UKI, and PK/KEK.
    for name in ["PK", "KEK", "db"] {
        let pem = std::fs::read_to_string(root().join(format!("firmware/secure-boot/{name}.crt"))).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
        assert!(committed.windows(der.len()).any(|w| w == der), "{name}.crt is not enrolled in the store");
    }
}
