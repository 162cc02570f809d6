//! PID 1's own measurement log: every PCR extension Sovereign makes after the firmware, in the
//! format documented in `docs/measured-boot-formats.md` ("Measurement log"), so that a verifier
//! can replay it.
//!
//! Format (JSON Lines, UTF-8, one object per line, `\n`-terminated):
//! line 1 is the header `{"format":"sovereign-measurement-log","version":1,"bank":"sha256"}`;
//! each further line is one extension
//! `{"pcr":15,"kind":"manifest","digest":"<64 hex>","description":"..."}`,
//! in the order the extensions were made. Replay: `pcr = SHA-256(pcr || digest)` from the
//! value the PCR held before PID 1 ran (zero for PCR 15).
//!
//! Pure: no IO (the TPM edge appends records and writes the bytes).

use serde::{Deserialize, Serialize};

use crate::pcr::{PCR_COUNT, PcrValues, Sha256Digest};

/// The PCR that PID 1 extends with the manifest, the runtime configuration and the
/// "keys released" separator. systemd leaves PCR 15 to the OS; nothing else on the image
/// extends it.
pub const PROJECT_PCR: u8 = 15;

/// The header value of `format`.
pub const FORMAT: &str = "sovereign-measurement-log";
/// The only supported format version.
pub const VERSION: u32 = 1;
/// Largest accepted log (PID 1 writes a handful of lines).
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// What an extension measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MeasurementKind {
    /// The SHA-256 of the signed manifest's canonical bytes.
    Manifest,
    /// The SHA-256 of the runtime configuration.
    RuntimeConfig,
    /// The "keys released" separator: after it, this boot can no longer unseal.
    Separator,
}

impl MeasurementKind {
    /// The digest extended for a separator: SHA-256 of this fixed string.
    pub const SEPARATOR_TEXT: &'static [u8] = b"sovereign: keys released";
}

/// One recorded extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// PCR extended.
    pub pcr: u8,
    /// What was measured.
    pub kind: MeasurementKind,
    /// The digest extended into the PCR.
    pub digest: Sha256Digest,
    /// Human-readable description (for reports only; not part of the replay).
    pub description: String,
}

impl Measurement {
    /// The separator that closes the unseal window.
    pub fn separator() -> Self {
        Measurement {
            pcr: PROJECT_PCR,
            kind: MeasurementKind::Separator,
            digest: Sha256Digest::of(MeasurementKind::SEPARATOR_TEXT),
            description: "keys released; unsealing is closed for this boot".into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    bank: String,
}

/// Why a measurement log was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasurementLogError {
    /// The log is larger than [`MAX_LOG_BYTES`].
    #[error("measurement log is {0} bytes; the limit is {MAX_LOG_BYTES}")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("measurement log is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// Empty or missing header.
    #[error("measurement log line 1: missing or malformed header ({0})")]
    BadHeader(String),
    /// A line is not a valid record.
    #[error("measurement log line {line}: {reason}")]
    BadRecord {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The last line lacks its newline: the log was torn while being written.
    #[error("measurement log line {0}: not terminated by a newline (torn write)")]
    Torn(usize),
}

/// An ordered list of measurements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeasurementLog {
    /// The records, in extension order.
    pub records: Vec<Measurement>,
}

impl MeasurementLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record.
    pub fn push(&mut self, m: Measurement) {
        self.records.push(m);
    }

    /// The encoded log (header line plus one line per record).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header { format: FORMAT.into(), version: VERSION, bank: "sha256".into() };
        let mut out = serde_json::to_vec(&header).expect("serializing a plain struct cannot fail");
        out.push(b'\n');
        for r in &self.records {
            out.extend(Self::encode_record(r));
        }
        out
    }

    /// One encoded record line, including its newline (for appending to a file).
    pub fn encode_record(m: &Measurement) -> Vec<u8> {
        let mut line = serde_json::to_vec(m).expect("serializing a plain struct cannot fail");
        line.push(b'\n');
        line
    }

    /// Parses an encoded log, refusing anything malformed, unknown or torn.
    pub fn parse(bytes: &[u8]) -> Result<Self, MeasurementLogError> {
        if bytes.len() > MAX_LOG_BYTES {
            return Err(MeasurementLogError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| MeasurementLogError::NotUtf8(e.valid_up_to()))?;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let Some(first) = lines.first() else {
            return Err(MeasurementLogError::BadHeader("empty log".into()));
        };
        let header: Header = serde_json::from_str(first.trim_end_matches('\n'))
            .map_err(|e| MeasurementLogError::BadHeader(e.to_string()))?;
        if header.format != FORMAT || header.version != VERSION || header.bank != "sha256" {
            return Err(MeasurementLogError::BadHeader(format!(
                "format {:?} version {} bank {:?}; expected {FORMAT:?} version {VERSION} bank \"sha256\"",
                header.format, header.version, header.bank
            )));
        }
        let mut records = Vec::new();
        for (i, raw) in lines.iter().enumerate() {
            let line = i + 1;
            let Some(body) = raw.strip_suffix('\n') else {
                return Err(MeasurementLogError::Torn(line));
            };
            if i == 0 {
                continue;
            }
            let m: Measurement = serde_json::from_str(body)
                .map_err(|e| MeasurementLogError::BadRecord { line, reason: e.to_string() })?;
            if m.pcr >= PCR_COUNT {
                return Err(MeasurementLogError::BadRecord { line, reason: format!("PCR {} does not exist", m.pcr) });
            }
            if m.kind == MeasurementKind::Separator && m.digest != Measurement::separator().digest {
                return Err(MeasurementLogError::BadRecord {
                    line,
                    reason: "separator record with a non-separator digest".into(),
                });
            }
            records.push(m);
        }
        Ok(MeasurementLog { records })
    }

    /// Replays the log on top of `start` (the PCR values before PID 1's first extension).
    pub fn replay_onto(&self, start: &PcrValues) -> PcrValues {
        let mut pcrs = start.clone();
        for r in &self.records {
            pcrs.extend(r.pcr, &r.digest);
        }
        pcrs
    }

    /// The PCRs this log extends.
    pub fn pcrs(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.records.iter().map(|r| r.pcr).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MeasurementLog {
        let mut log = MeasurementLog::new();
        log.push(Measurement {
            pcr: PROJECT_PCR,
            kind: MeasurementKind::Manifest,
            digest: Sha256Digest::of(b"manifest"),
            description: "manifest v1".into(),
        });
        log.push(Measurement::separator());
        log
    }

    #[test]
    fn round_trips_and_replays() {
        let log = sample();
        let bytes = log.to_bytes();
        assert_eq!(MeasurementLog::parse(&bytes).unwrap(), log);
        let pcrs = log.replay_onto(&PcrValues::new());
        let mut expected = PcrValues::new();
        expected.extend(15, &Sha256Digest::of(b"manifest"));
        expected.extend(15, &Sha256Digest::of(MeasurementKind::SEPARATOR_TEXT));
        assert_eq!(pcrs, expected);
    }

    #[test]
    fn torn_unknown_and_forged_records_are_refused() {
        let bytes = sample().to_bytes();
        assert_eq!(MeasurementLog::parse(&bytes[..bytes.len() - 1]).unwrap_err(), MeasurementLogError::Torn(3));
        let text = String::from_utf8(bytes).unwrap();
        let unknown = text.replace("\"manifest\"", "\"shell\"");
        assert!(matches!(
            MeasurementLog::parse(unknown.as_bytes()),
            Err(MeasurementLogError::BadRecord { line: 2, .. })
        ));
        let extra = text.replace("\"pcr\":15,\"kind\":\"manifest\"", "\"pcr\":15,\"x\":1,\"kind\":\"manifest\"");
        assert!(MeasurementLog::parse(extra.as_bytes()).is_err());
        let v2 = text.replace("\"version\":1", "\"version\":2");
        assert!(matches!(MeasurementLog::parse(v2.as_bytes()), Err(MeasurementLogError::BadHeader(_))));
        let forged_sep = text.replace(&Measurement::separator().digest.to_hex(), &"00".repeat(32));
        assert!(MeasurementLog::parse(forged_sep.as_bytes()).is_err());
    }
}
