//! The bundle's container: strict ustar. Written canonically (fixed header fields, zero
//! padding, two zero blocks at the end); read back only if every header is byte-identical to the
//! one this module would write, so no byte of the file goes unaccounted for.

use std::collections::BTreeSet;

use crate::verify::{Failure, fail};

/// A tar block.
const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn header(name: &str, size: u64, dir: bool) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

pub(super) fn valid_path(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 100
        && !name.starts_with('/')
        && name.split('/').all(|c| c != ".." && c != ".")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// Writes members (name → bytes; names ending in `/` are directories) as a canonical ustar.
pub fn write_tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let dir = name.ends_with('/');
        out.extend_from_slice(&header(name, data.len() as u64, dir));
        out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

/// Reads a canonical ustar strictly; errors name the byte offset.
pub fn read_tar(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names = BTreeSet::new();
    let mut off = 0usize;
    loop {
        let Some(h) = bytes.get(off..off + BLOCK) else {
            return Err(fail(format!("byte {off}"), "archive ends without the two zero end blocks"));
        };
        if h.iter().all(|b| *b == 0) {
            let rest = &bytes[off..];
            if rest.len() != 2 * BLOCK || !rest.iter().all(|b| *b == 0) {
                return Err(fail(
                    format!("byte {off}"),
                    "end of archive must be exactly two zero blocks and nothing after",
                ));
            }
            return Ok(members);
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end])
            .map_err(|_| fail(format!("tar header at byte {off}"), "member name is not UTF-8"))?;
        if !valid_path(name) {
            return Err(fail(
                format!("tar header at byte {off}"),
                format!("member name {name:?} is not an allowed relative path"),
            ));
        }
        let dir = h[156] == b'5';
        let size_text = std::str::from_utf8(&h[124..135]).unwrap_or("");
        let size = u64::from_str_radix(size_text, 8)
            .map_err(|_| fail(format!("tar header {name} at byte {off}"), "size field is not octal"))?;
        if header(name, size, dir) != h {
            return Err(fail(
                format!("tar header {name} at byte {off}"),
                "header is not byte-identical to the canonical header (altered)",
            ));
        }
        if dir && size != 0 {
            return Err(fail(format!("tar header {name} at byte {off}"), "directory with content"));
        }
        let size = usize::try_from(size).map_err(|_| fail(format!("tar header {name}"), "size too large"))?;
        let start = off + BLOCK;
        let end = start.checked_add(size).filter(|e| *e <= bytes.len()).ok_or_else(|| {
            fail(format!("member {name} at byte {start}"), "content extends past the end of the file")
        })?;
        let padded = end + (BLOCK - size % BLOCK) % BLOCK;
        let pad = bytes
            .get(end..padded)
            .ok_or_else(|| fail(format!("member {name}"), "padding extends past the end of the file"))?;
        if let Some(i) = pad.iter().position(|b| *b != 0) {
            return Err(fail(format!("padding of {name} at byte {}", end + i), "padding is not zero (altered)"));
        }
        if !names.insert(name.to_string()) {
            return Err(fail(format!("tar header {name} at byte {off}"), "duplicate member"));
        }
        members.push((name.to_string(), bytes[start..end].to_vec()));
        off = padded;
    }
}

// ---------------------------------------------------------------- the bundle model
