//! Deterministic `newc` cpio archives (the initramfs format the kernel unpacks), and a strict
//! reader used to audit what an initramfs contains. Pure: no IO.

/// A node to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Path without the leading `/` (e.g. `usr/bin/x`).
    pub path: String,
    /// Full `st_mode` (type bits | permissions).
    pub mode: u32,
    /// Content (files) or link target (symlinks).
    pub data: Vec<u8>,
    /// Device numbers for device nodes.
    pub rdev: (u32, u32),
}

/// `S_IFREG`.
pub const S_IFREG: u32 = 0o100000;
/// `S_IFDIR`.
pub const S_IFDIR: u32 = 0o040000;
/// `S_IFCHR`.
pub const S_IFCHR: u32 = 0o020000;
/// `S_IFLNK`.
pub const S_IFLNK: u32 = 0o120000;
/// Type mask.
pub const S_IFMT: u32 = 0o170000;

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, rdev: (u32, u32), name: &str) {
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1, (name.len() + 1) as u32, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Writes nodes (sorted by path, so parents precede children) with zero timestamps and owners.
pub fn write(nodes: &[Node]) -> Vec<u8> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for (i, n) in sorted.iter().enumerate() {
        let nlink = if n.mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        header(&mut out, i as u32 + 1, n.mode, nlink, n.data.len(), n.rdev, &n.path);
        out.extend_from_slice(&n.data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
    out
}

/// Reads a `newc` archive strictly (as written by [`write`]); errors name the byte offset.
pub fn read(bytes: &[u8]) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    let mut off = 0usize;
    loop {
        let h = bytes.get(off..off + 110).ok_or_else(|| format!("byte {off}: truncated header"))?;
        if &h[..6] != b"070701" {
            return Err(format!("byte {off}: bad magic"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s =
                std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).map_err(|_| format!("byte {off}: non-ASCII field"))?;
            u32::from_str_radix(s, 16).map_err(|_| format!("byte {off}: field {i} is not hex"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_start = off + 110;
        let name_bytes =
            bytes.get(name_start..name_start + namesize).ok_or_else(|| format!("byte {off}: truncated name"))?;
        let name = std::str::from_utf8(&name_bytes[..namesize.saturating_sub(1)])
            .map_err(|_| format!("byte {off}: name not UTF-8"))?;
        let mut data_start = name_start + namesize;
        data_start += (4 - data_start % 4) % 4;
        if name == "TRAILER!!!" {
            return Ok(nodes);
        }
        let data =
            bytes.get(data_start..data_start + size).ok_or_else(|| format!("byte {off}: {name}: truncated data"))?;
        nodes.push(Node { path: name.to_string(), mode, data: data.to_vec(), rdev });
        off = data_start + size;
        off += (4 - off % 4) % 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_deterministically() {
        let nodes = vec![
            Node { path: "init".into(), mode: S_IFREG | 0o755, data: b"\x7fELF...".to_vec(), rdev: (0, 0) },
            Node { path: "dev".into(), mode: S_IFDIR | 0o755, data: vec![], rdev: (0, 0) },
            Node { path: "dev/console".into(), mode: S_IFCHR | 0o600, data: vec![], rdev: (5, 1) },
            Node { path: "lib64".into(), mode: S_IFLNK | 0o777, data: b"lib".to_vec(), rdev: (0, 0) },
        ];
        let a = write(&nodes);
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(a, write(&reversed), "order of input does not matter");
        let back = read(&a).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[0].path, "dev");
        assert_eq!(back[1].rdev, (5, 1));
        assert!(read(&a[..a.len() - 10]).is_err());
    }
}
