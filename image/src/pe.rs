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
