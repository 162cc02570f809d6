//! Just enough PE/COFF to assemble a reproducible UKI and predict what the systemd EFI stub
//! measures: section layout, the two build-time fields objcopy writes (TimeDateStamp and
//! CheckSum), and PCR 11. Pure: no IO; malformed input is an error, never a panic.

use sovereign_measured_boot::pcr::{PcrValues, Sha256Digest};

/// A section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name (up to 8 bytes, NULs trimmed).
    pub name: String,
    /// VirtualSize.
    pub virtual_size: u32,
    /// VirtualAddress (RVA).
    pub virtual_address: u32,
    /// SizeOfRawData.
    pub raw_size: u32,
    /// PointerToRawData.
    pub raw_pointer: u32,
}

/// The parts of a PE32+ image we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pe {
    /// Offset of the COFF TimeDateStamp field.
    pub timestamp_offset: usize,
    /// Offset of the optional header's CheckSum field.
    pub checksum_offset: usize,
    /// ImageBase.
    pub image_base: u64,
    /// SectionAlignment.
    pub section_alignment: u32,
    /// Sections in table order.
    pub sections: Vec<Section>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| format!("PE truncated at byte {o}"))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("PE truncated at byte {o}"))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, o)?) | (u64::from(u32_at(b, o + 4)?) << 32))
}

impl Pe {
    /// Parses the headers of a PE32+ image.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.get(..2) != Some(b"MZ") {
            return Err("not a PE image (no MZ header)".into());
        }
        let pe = u32_at(b, 0x3c)? as usize;
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(format!("no PE signature at byte {pe}"));
        }
        let coff = pe + 4;
        let sections = usize::from(u16_at(b, coff + 2)?);
        let optional_size = usize::from(u16_at(b, coff + 16)?);
        let opt = coff + 20;
        if u16_at(b, opt)? != 0x20b {
            return Err("not a PE32+ image".into());
        }
        let image_base = u64_at(b, opt + 24)?;
        let section_alignment = u32_at(b, opt + 32)?;
        let table = opt + optional_size;
        let mut out = Vec::with_capacity(sections);
        for i in 0..sections {
            let s = table + i * 40;
            let raw_name = b.get(s..s + 8).ok_or_else(|| format!("section table truncated at byte {s}"))?;
            let name = String::from_utf8_lossy(raw_name).trim_end_matches('\0').to_string();
            out.push(Section {
                name,
                virtual_size: u32_at(b, s + 8)?,
                virtual_address: u32_at(b, s + 12)?,
                raw_size: u32_at(b, s + 16)?,
                raw_pointer: u32_at(b, s + 20)?,
            });
        }
        Ok(Pe { timestamp_offset: coff + 4, checksum_offset: opt + 64, image_base, section_alignment, sections: out })
    }

    /// The first RVA after every section, aligned to the section alignment.
    pub fn end_rva(&self) -> u64 {
        let end = self
            .sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
            .max()
            .unwrap_or(0);
        let align = u64::from(self.section_alignment.max(0x1000));
        end.div_ceil(align) * align
    }

    /// The measured bytes of a section: its first VirtualSize bytes (as the stub measures).
    pub fn section_data<'a>(&self, image: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        let len = s.virtual_size.min(s.raw_size) as usize;
        image.get(s.raw_pointer as usize..s.raw_pointer as usize + len)
    }
}

/// The Authenticode SHA-256 of a PE32+ image, as UEFI firmware measures an EFI application
/// into PCR 4 (PE/COFF specification, "Calculating the PE Image Hash"): the headers without
/// the CheckSum field and the certificate-table directory entry, then every section's raw data
/// in file order, then any trailing bytes that are not the attribute certificate table.
pub fn authenticode_sha256(b: &[u8]) -> Result<Sha256Digest, String> {
    use sha2::{Digest as _, Sha256};
    let pe = Pe::parse(b)?;
    let opt = pe.checksum_offset - 64;
    let size_of_headers = u32_at(b, opt + 60)? as usize;
    let directories = u32_at(b, opt + 108)?;
    let cert_entry = opt + 112 + 4 * 8;
    let cert_size = if directories > 4 { u32_at(b, cert_entry + 4)? as usize } else { 0 };
    let slice = |from: usize, to: usize| {
        b.get(from..to).ok_or_else(|| format!("PE bytes {from}..{to} lie outside the {}-byte image", b.len()))
    };
    let mut h = Sha256::new();
    h.update(slice(0, pe.checksum_offset)?);
    if directories > 4 {
        h.update(slice(pe.checksum_offset + 4, cert_entry)?);
        h.update(slice(cert_entry + 8, size_of_headers)?);
    } else {
        h.update(slice(pe.checksum_offset + 4, size_of_headers)?);
    }
    let mut sections: Vec<&Section> = pe.sections.iter().filter(|s| s.raw_size > 0).collect();
    sections.sort_by_key(|s| s.raw_pointer);
    let mut hashed = size_of_headers;
    for s in sections {
        let from = s.raw_pointer as usize;
        h.update(slice(from, from + s.raw_size as usize)?);
        hashed += s.raw_size as usize;
    }
    let end = b.len().checked_sub(cert_size).ok_or("certificate table larger than the image")?;
    if end > hashed {
        h.update(slice(hashed, end)?);
    }
    Ok(Sha256Digest(h.finalize().into()))
}

/// Zeroes the build-time fields objcopy writes (COFF TimeDateStamp, optional-header CheckSum)
/// so two builds from the same inputs are bit-identical.
pub fn normalize(image: &mut [u8]) -> Result<(), String> {
    let pe = Pe::parse(image)?;
    for o in [pe.timestamp_offset, pe.checksum_offset] {
        image.get_mut(o..o + 4).ok_or_else(|| format!("PE truncated at byte {o}"))?.fill(0);
    }
    Ok(())
}

/// Sections the systemd stub (v252) measures into PCR 11, in its order. `.pcrsig` is never
/// measured (it would be circular).
pub const MEASURED_SECTIONS: [&str; 7] = [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"];
/// The PCR the stub measures into.
pub const PCR_KERNEL_IMAGE: u8 = 11;
/// The PCR the Linux EFI stub measures its load options and the initrd into.
pub const PCR_KERNEL_BOOT: u8 = 9;
/// The PCR boot-path input is measured into: the command line systemd-boot passes as load
/// options (the UKI's own `.cmdline` in a Sovereign boot, [`predict_pcr12_from_uki`]), a
/// command line the systemd stub takes instead of `.cmdline` (only with Secure Boot off), and
/// credentials from the ESP (none in a Sovereign boot).
pub const PCR_KERNEL_CONFIG: u8 = 12;
/// The PCR the systemd stub measures system extensions from the ESP into; none in a Sovereign
/// boot, so zero.
pub const PCR_SYSEXTS: u8 = 13;
/// Every PCR the UKI's stubs measure boot-path input into, beyond PCR 11's own sections: the
/// seal policy binds each (PCRs 9 and 12 predicted from the UKI, PCR 13 to zero), so no input
/// the release did not sign (a command line, a credential, an extension) releases the keys.
pub const BOOT_INPUT_PCRS: [u8; 3] = [PCR_KERNEL_BOOT, PCR_KERNEL_CONFIG, PCR_SYSEXTS];

/// PCR 11 after the stub measured `sections` (name → measured bytes), from reset (zero):
/// for each present section in [`MEASURED_SECTIONS`] order, extend with SHA-256 of the name
/// including its terminating NUL, then with SHA-256 of the section data.
pub fn predict_pcr11(sections: &[(&str, &[u8])]) -> Sha256Digest {
    let mut pcrs = PcrValues::new();
    pcrs.set(PCR_KERNEL_IMAGE, Sha256Digest::default());
    for name in MEASURED_SECTIONS {
        if let Some((_, data)) = sections.iter().find(|(n, _)| *n == name) {
            let mut cname = name.as_bytes().to_vec();
            cname.push(0);
            pcrs.extend(PCR_KERNEL_IMAGE, &Sha256Digest::of(&cname));
            pcrs.extend(PCR_KERNEL_IMAGE, &Sha256Digest::of(data));
        }
    }
    pcrs.get(PCR_KERNEL_IMAGE).copied().unwrap_or_default()
}

/// PCR 11 predicted from an assembled UKI.
pub fn predict_pcr11_from_uki(image: &[u8]) -> Result<Sha256Digest, String> {
    let pe = Pe::parse(image)?;
    let sections: Vec<(&str, &[u8])> =
        MEASURED_SECTIONS.iter().filter_map(|n| pe.section_data(image, n).map(|d| (*n, d))).collect();
    if !sections.iter().any(|(n, _)| *n == ".linux") {
        return Err("UKI has no .linux section".into());
    }
    Ok(predict_pcr11(&sections))
}

/// The digest UEFI firmware extends into PCR 4 before it starts a boot option
/// (`EV_EFI_ACTION` "Calling EFI Application from Boot Option", TCG PC Client spec).
pub const BOOT_OPTION_ACTION: &[u8] = b"Calling EFI Application from Boot Option";

/// PCR 4 after firmware started the boot loader from a boot option and the loader started the
/// UKI: the boot-option action, the separator (`00000000`), the Authenticode hash of the loader
/// (systemd-boot), that of the UKI (the loader starts it through the firmware's `LoadImage`,
/// which measures it), then — with Secure Boot off only — that of the kernel the stub loads from
/// its `.linux` section. With Secure Boot on, systemd-stub 252 loads the kernel (not separately
/// signed) through its own override of the firmware's security protocol, which is where
/// firmware measures images, so the kernel is not measured into PCR 4 (seen on OVMF; PCR 11
/// covers `.linux` either way).
pub fn predict_pcr4(loader: &[u8], image: &[u8], secure_boot: bool) -> Result<Sha256Digest, String> {
    let pe = Pe::parse(image)?;
    let linux = pe.section_data(image, ".linux").ok_or("the UKI has no .linux section")?;
    let loader = authenticode_sha256(loader).map_err(|e| format!("the boot loader: {e}"))?;
    let mut digests = vec![
        Sha256Digest::of(BOOT_OPTION_ACTION),
        Sha256Digest::of(&[0, 0, 0, 0]),
        loader,
        authenticode_sha256(image)?,
    ];
    if !secure_boot {
        digests.push(authenticode_sha256(linux).map_err(|e| format!(".linux: {e}"))?);
    }
    let mut pcrs = PcrValues::new();
    for digest in &digests {
        pcrs.extend(4, digest);
    }
    pcrs.get(4).copied().ok_or_else(|| "PCR 4 not computed".into())
}

/// PCR 9 after the Linux EFI stub started: it measures the kernel's load options (the UKI's
/// `.cmdline` as the UTF-16 string the systemd stub passes, NUL-terminated), then the initrd
/// (the UKI's `.initrd`; this image adds no credential or sysext initrds).
pub fn predict_pcr9_from_uki(image: &[u8]) -> Result<Sha256Digest, String> {
    let pe = Pe::parse(image)?;
    let cmdline = pe.section_data(image, ".cmdline").ok_or("the UKI has no .cmdline section")?;
    let initrd = pe.section_data(image, ".initrd").ok_or("the UKI has no .initrd section")?;
    let text = std::str::from_utf8(cmdline).map_err(|e| format!(".cmdline is not UTF-8: {e}"))?;
    let load_options: Vec<u8> = text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
    let mut pcrs = PcrValues::new();
    pcrs.extend(9, &Sha256Digest::of(&load_options));
    pcrs.extend(9, &Sha256Digest::of(initrd));
    pcrs.get(9).copied().ok_or_else(|| "PCR 9 not computed".into())
}

/// PCR 12 after systemd-boot started the UKI: the loader passes the UKI's `.cmdline` (a
/// trailing newline dropped) as the image's load options and measures them, as the UTF-16
/// string with its NUL, into PCR 12 (systemd-boot 252, `tpm_log_load_options`). With Secure
/// Boot on the stub then ignores them for its own `.cmdline`; with it off (`secure_boot`
/// false: an unsigned image for a platform without Secure Boot) the stub takes them instead and
/// measures them once more. An edited command line (the loader's editor, a changed entry)
/// changes PCR 12, so the node keys stay sealed.
pub fn predict_pcr12_from_uki(image: &[u8], secure_boot: bool) -> Result<Sha256Digest, String> {
    let pe = Pe::parse(image)?;
    let cmdline = pe.section_data(image, ".cmdline").ok_or("the UKI has no .cmdline section")?;
    let text = std::str::from_utf8(cmdline).map_err(|e| format!(".cmdline is not UTF-8: {e}"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let options: Vec<u8> = text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
    let mut pcrs = PcrValues::new();
    pcrs.extend(12, &Sha256Digest::of(&options));
    if !secure_boot {
        pcrs.extend(12, &Sha256Digest::of(&options));
    }
    pcrs.get(12).copied().ok_or_else(|| "PCR 12 not computed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ with one section and a trailing 16-byte "certificate table".
    fn tiny_pe(with_certificate: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes()); // NumberOfRvaAndSizes
        let s = opt + 240;
        b[s..s + 5].copy_from_slice(b".text");
        b[s + 8..s + 12].copy_from_slice(&0x200u32.to_le_bytes());
        b[s + 12..s + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        b[s + 16..s + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes());
        b[0x200..0x400].fill(0xc3);
        if with_certificate {
            let entry = opt + 112 + 32;
            b[entry..entry + 4].copy_from_slice(&0x400u32.to_le_bytes());
            b[entry + 4..entry + 8].copy_from_slice(&16u32.to_le_bytes());
            b.extend_from_slice(&[0xee; 16]);
        }
        b
    }

    #[test]
    fn authenticode_skips_checksum_certificate_entry_and_table() {
        let plain = tiny_pe(false);
        let signed = tiny_pe(true);
        // Independent computation of the definition for the unsigned image.
        let opt = 0x84 + 20;
        let mut expected = Vec::new();
        expected.extend_from_slice(&plain[..opt + 64]);
        expected.extend_from_slice(&plain[opt + 68..opt + 144]);
        expected.extend_from_slice(&plain[opt + 152..0x200]);
        expected.extend_from_slice(&plain[0x200..0x400]);
        assert_eq!(authenticode_sha256(&plain).unwrap(), Sha256Digest::of(&expected));
        // The checksum and the certificate table (and its directory entry) are not hashed.
        let mut restamped = signed.clone();
        restamped[opt + 64] ^= 0xff;
        let last = restamped.len() - 1;
        restamped[last] ^= 0xff;
        assert_eq!(authenticode_sha256(&restamped).unwrap(), authenticode_sha256(&plain).unwrap());
        // Section bytes are.
        let mut patched = plain.clone();
        patched[0x300] = 0x90;
        assert_ne!(authenticode_sha256(&patched).unwrap(), authenticode_sha256(&plain).unwrap());
    }

    #[test]
    fn malformed_images_are_errors_not_panics() {
        let pe = tiny_pe(true);
        for len in [0, 2, 0x40, 0x90, 0x150, 0x1ff, 0x300] {
            assert!(authenticode_sha256(&pe[..len]).is_err(), "truncated at {len}");
        }
        let mut huge_cert = pe.clone();
        let entry = 0x84 + 20 + 112 + 32;
        huge_cert[entry + 4..entry + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(authenticode_sha256(&huge_cert).is_err());
        assert!(predict_pcr4(&pe, &pe, false).is_err(), "no .linux section");
        assert!(predict_pcr9_from_uki(&pe).is_err(), "no .cmdline section");
    }
}
