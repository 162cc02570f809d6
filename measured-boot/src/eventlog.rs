//! The firmware's TCG PC Client event log in the crypto-agile format (TCG PC Client Platform
//! Firmware Profile, §10), as exposed by Linux at
//! `/sys/kernel/security/tpm0/binary_bios_measurements`, and its replay to PCR values.
//!
//! Layout: one legacy `TCG_PCClientPCREvent` (SHA-1 format) carrying the
//! `Spec ID Event03` header that lists the digest algorithms and sizes, then any number of
//! `TCG_PCR_EVENT2` records. All integers are little-endian.
//!
//! Pure: no IO. Every malformed input is a [`ParseError`] naming the event and the field.

use crate::pcr::{PcrValues, Sha256Digest, TPM_ALG_SHA1, TPM_ALG_SHA256};
use crate::wire::{ParseError, Reader};

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EFI_ACTION`.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// `EV_IPL`.
pub const EV_IPL: u32 = 0x0000_000D;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// Largest event data accepted (real events are at most a few hundred KiB).
const MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Largest number of digest algorithms a header may declare.
const MAX_ALGORITHMS: u32 = 16;
/// Largest digest size accepted for an algorithm declared in the header.
const MAX_DIGEST_SIZE: u16 = 64;

/// One digest of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDigest {
    /// `TPM_ALG_ID` of the digest.
    pub algorithm: u16,
    /// The digest bytes.
    pub digest: Vec<u8>,
}

/// One measured (or informational) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (0 is the Spec ID header event).
    pub number: usize,
    /// PCR the event was extended into.
    pub pcr: u32,
    /// `EV_*` event type.
    pub event_type: u32,
    /// One digest per bank.
    pub digests: Vec<EventDigest>,
    /// The event data (what was measured, or a description of it).
    pub data: Vec<u8>,
}

impl Event {
    /// The sha256 digest of this event, if it has one.
    pub fn sha256(&self) -> Option<Sha256Digest> {
        self.digests.iter().find(|d| d.algorithm == TPM_ALG_SHA256).and_then(|d| Sha256Digest::from_slice(&d.digest))
    }

    /// The `EV_*` name of the event type, for reports.
    pub fn type_name(&self) -> &'static str {
        event_type_name(self.event_type)
    }
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// Digest algorithms and sizes from the Spec ID header.
    pub algorithms: Vec<(u16, u16)>,
    /// Locality of TPM2_Startup, from a `StartupLocality` event (0 when absent).
    pub startup_locality: u8,
    /// Every event after the header, in order.
    pub events: Vec<Event>,
}

/// Why a replay could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A measured event has no sha256 digest, so the sha256 bank cannot be recomputed.
    #[error("event {number} ({type_name}, PCR {pcr}) has no sha256 digest")]
    MissingSha256 {
        /// Event position.
        number: usize,
        /// Event type name.
        type_name: &'static str,
        /// PCR index.
        pcr: u32,
    },
    /// An event names a PCR that does not exist.
    #[error("event {number} extends PCR {pcr}, which does not exist")]
    BadPcr {
        /// Event position.
        number: usize,
        /// PCR index.
        pcr: u32,
    },
}

impl EventLog {
    /// Parses a whole log. Trailing bytes that do not form a complete event are an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new("event 0 (Spec ID header)", bytes);
        // TCG_PCClientPCREvent: the SHA-1 format header event.
        let pcr = r.u32_le("pcrIndex")?;
        let at = r.offset();
        let event_type = r.u32_le("eventType")?;
        if event_type != EV_NO_ACTION || pcr != 0 {
            return Err(r.invalid_at(at, "eventType", format!(
                "first event must be EV_NO_ACTION on PCR 0 (crypto-agile header), found type 0x{event_type:08x} on PCR {pcr}; SHA-1-only logs are not supported"
            )));
        }
        r.take(20, "digest")?;
        let at = r.offset();
        let size = r.u32_le("eventSize")? as usize;
        if size > r.remaining() {
            return Err(r.invalid_at(at, "eventSize", format!("{size} bytes, only {} left", r.remaining())));
        }
        let header = r.take(size, "event")?;
        let algorithms = parse_spec_id(header)?;

        let mut events = Vec::new();
        let mut startup_locality = 0;
        let mut number = 1usize;
        while r.remaining() > 0 {
            r.structure("TCG_PCR_EVENT2");
            let event = parse_event2(&mut r, &algorithms, number)?;
            if event.event_type == EV_NO_ACTION
                && event.pcr == 0
                && event.data.len() == 17
                && event.data.starts_with(STARTUP_LOCALITY_SIGNATURE)
            {
                startup_locality = event.data[16];
            }
            events.push(event);
            number += 1;
        }
        Ok(EventLog { algorithms, startup_locality, events })
    }

    /// Replays every measured event into the sha256 bank, starting from the reset values
    /// (PCR 0 starts at the startup locality, as the TPM does for an H-CRTM-less start).
    /// Returns the value of every PCR the log touched.
    pub fn replay(&self) -> Result<PcrValues, ReplayError> {
        let mut pcrs = PcrValues::new();
        if self.startup_locality != 0 {
            let mut initial = [0u8; 32];
            initial[31] = self.startup_locality;
            pcrs.set(0, Sha256Digest(initial));
        }
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            let pcr = u8::try_from(e.pcr)
                .ok()
                .filter(|p| *p < crate::pcr::PCR_COUNT)
                .ok_or(ReplayError::BadPcr { number: e.number, pcr: e.pcr })?;
            let digest = e.sha256().ok_or(ReplayError::MissingSha256 {
                number: e.number,
                type_name: e.type_name(),
                pcr: e.pcr,
            })?;
            pcrs.extend(pcr, &digest);
        }
        Ok(pcrs)
    }
}

fn parse_spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, ParseError> {
    let mut r = Reader::new("TCG_EfiSpecIDEvent", data);
    let at = r.offset();
    let signature = r.take(16, "signature")?;
    if signature != SPEC_ID_SIGNATURE {
        return Err(r.invalid_at(
            at,
            "signature",
            format!("expected \"Spec ID Event03\", found {:?}", String::from_utf8_lossy(signature)),
        ));
    }
    r.u32_le("platformClass")?;
    r.u8("specVersionMinor")?;
    let at = r.offset();
    let major = r.u8("specVersionMajor")?;
    if major != 2 {
        return Err(r.invalid_at(at, "specVersionMajor", format!("{major}; only 2 is supported")));
    }
    r.u8("specErrata")?;
    r.u8("uintnSize")?;
    let at = r.offset();
    let count = r.u32_le("numberOfAlgorithms")?;
    if count == 0 || count > MAX_ALGORITHMS {
        return Err(r.invalid_at(at, "numberOfAlgorithms", format!("{count}; expected 1..={MAX_ALGORITHMS}")));
    }
    let mut algorithms: Vec<(u16, u16)> = Vec::new();
    for _ in 0..count {
        let at = r.offset();
        let alg = r.u16_le("digestSizes.algorithmId")?;
        let size = r.u16_le("digestSizes.digestSize")?;
        let expected = match alg {
            TPM_ALG_SHA1 => Some(20),
            TPM_ALG_SHA256 => Some(32),
            0x000C => Some(48),
            0x000D => Some(64),
            _ => None,
        };
        if expected.is_some_and(|e| e != size) || size == 0 || size > MAX_DIGEST_SIZE {
            return Err(r.invalid_at(
                at,
                "digestSizes",
                format!("algorithm 0x{alg:04x} declared with digest size {size}"),
            ));
        }
        if algorithms.iter().any(|(a, _)| *a == alg) {
            return Err(r.invalid_at(at, "digestSizes", format!("algorithm 0x{alg:04x} declared twice")));
        }
        algorithms.push((alg, size));
    }
    let vendor = usize::from(r.u8("vendorInfoSize")?);
    r.take(vendor, "vendorInfo")?;
    r.finish()?;
    Ok(algorithms)
}

fn parse_event2(r: &mut Reader<'_>, algorithms: &[(u16, u16)], number: usize) -> Result<Event, ParseError> {
    let pcr = r.u32_le("pcrIndex").map_err(|e| at_event(e, number))?;
    let event_type = r.u32_le("eventType").map_err(|e| at_event(e, number))?;
    let at = r.offset();
    let count = r.u32_le("digests.count").map_err(|e| at_event(e, number))?;
    if count as usize > algorithms.len() {
        return Err(at_event(
            r.invalid_at(
                at,
                "digests.count",
                format!("{count} digests, header declares {} algorithms", algorithms.len()),
            ),
            number,
        ));
    }
    let mut digests: Vec<EventDigest> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = r.offset();
        let algorithm = r.u16_le("digests.hashAlg").map_err(|e| at_event(e, number))?;
        let Some(&(_, size)) = algorithms.iter().find(|(a, _)| *a == algorithm) else {
            return Err(at_event(
                r.invalid_at(at, "digests.hashAlg", format!("algorithm 0x{algorithm:04x} not declared in the header")),
                number,
            ));
        };
        if digests.iter().any(|d| d.algorithm == algorithm) {
            return Err(at_event(
                r.invalid_at(at, "digests.hashAlg", format!("algorithm 0x{algorithm:04x} appears twice")),
                number,
            ));
        }
        let digest = r.take(usize::from(size), "digests.digest").map_err(|e| at_event(e, number))?.to_vec();
        digests.push(EventDigest { algorithm, digest });
    }
    let at = r.offset();
    let size = r.u32_le("eventSize").map_err(|e| at_event(e, number))? as usize;
    if size > MAX_EVENT_SIZE {
        return Err(at_event(
            r.invalid_at(at, "eventSize", format!("{size} bytes exceeds the {MAX_EVENT_SIZE}-byte limit")),
            number,
        ));
    }
    let data = r.take(size, "event").map_err(|e| at_event(e, number))?.to_vec();
    Ok(Event { number, pcr, event_type, digests, data })
}

/// Prefixes the event number into the structure name of an error.
fn at_event(e: ParseError, number: usize) -> ParseError {
    match e {
        ParseError::Truncated { structure, field, offset, needed, available } => ParseError::Invalid {
            structure,
            field,
            offset,
            reason: format!("event {number}: truncated (needs {needed} bytes, {available} left)"),
        },
        ParseError::Invalid { structure, field, offset, reason } => {
            ParseError::Invalid { structure, field, offset, reason: format!("event {number}: {reason}") }
        }
        other => other,
    }
}

/// The `EV_*` name of an event type.
pub fn event_type_name(t: u32) -> &'static str {
    match t {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => "EV_UNKNOWN",
    }
}

/// Builds crypto-agile event logs byte for byte (for tests, fuzz seeds and tools that
/// synthesise logs); the encoding is the one [`EventLog::parse`] reads.
#[derive(Debug, Clone)]
pub struct EventLogBuilder {
    bytes: Vec<u8>,
}

impl Default for EventLogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLogBuilder {
    /// A log whose header declares sha1 and sha256 banks, as OVMF writes it.
    pub fn new() -> Self {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize (2 = 64-bit)
        spec.extend_from_slice(&2u32.to_le_bytes());
        for (alg, size) in [(TPM_ALG_SHA1, 20u16), (TPM_ALG_SHA256, 32u16)] {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&u32::try_from(spec.len()).unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(&spec);
        EventLogBuilder { bytes }
    }

    /// Appends a measured event with the given data; its digests are the hashes of `data`.
    pub fn measure(self, pcr: u32, event_type: u32, data: &[u8]) -> Self {
        let sha1: [u8; 20] = sha1_of(data);
        let sha256 = Sha256Digest::of(data);
        self.raw_event(pcr, event_type, &[(TPM_ALG_SHA1, &sha1), (TPM_ALG_SHA256, &sha256.0)], data)
    }

    /// Appends an event with explicit digests (which need not match `data`).
    pub fn raw_event(mut self, pcr: u32, event_type: u32, digests: &[(u16, &[u8])], data: &[u8]) -> Self {
        self.bytes.extend_from_slice(&pcr.to_le_bytes());
        self.bytes.extend_from_slice(&event_type.to_le_bytes());
        self.bytes.extend_from_slice(&u32::try_from(digests.len()).unwrap_or(0).to_le_bytes());
        for (alg, d) in digests {
            self.bytes.extend_from_slice(&alg.to_le_bytes());
            self.bytes.extend_from_slice(d);
        }
        self.bytes.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self
    }

    /// Appends a `StartupLocality` event.
    pub fn startup_locality(self, locality: u8) -> Self {
        let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(locality);
        self.raw_event(0, EV_NO_ACTION, &[(TPM_ALG_SHA1, &[0; 20]), (TPM_ALG_SHA256, &[0; 32])], &data)
    }

    /// The encoded log.
    pub fn build(self) -> Vec<u8> {
        self.bytes
    }
}

/// SHA-1 only fills the legacy bank of synthesised logs; the verifier never trusts that bank.
fn sha1_of(data: &[u8]) -> [u8; 20] {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_fips_vector() {
        assert_eq!(hex::encode(sha1_of(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn parses_and_replays_a_built_log() {
        let log = EventLogBuilder::new()
            .startup_locality(3)
            .measure(0, 0x8, b"firmware version")
            .measure(7, 0x8000_0001, b"SecureBoot=0")
            .measure(4, 0x8000_0003, b"bootx64.efi")
            .measure(0, EV_SEPARATOR, &[0; 4])
            .build();
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.events.len(), 5);
        assert_eq!(parsed.startup_locality, 3);
        let pcrs = parsed.replay().unwrap();
        let mut pcr0 = [0u8; 32];
        pcr0[31] = 3;
        let mut expected = PcrValues::new();
        expected.set(0, Sha256Digest(pcr0));
        expected.extend(0, &Sha256Digest::of(b"firmware version"));
        expected.extend(7, &Sha256Digest::of(b"SecureBoot=0"));
        expected.extend(4, &Sha256Digest::of(b"bootx64.efi"));
        expected.extend(0, &Sha256Digest::of(&[0; 4]));
        assert_eq!(pcrs, expected);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let log = EventLogBuilder::new().measure(4, EV_IPL, b"kernel").measure(5, EV_SEPARATOR, b"x").build();
        for len in 0..log.len() {
            // Cutting at an event boundary yields a shorter valid log; anywhere else must fail.
            let _ = EventLog::parse(&log[..len]);
        }
        assert!(EventLog::parse(&log[..log.len() - 1]).is_err());
    }

    #[test]
    fn rejects_undeclared_algorithm_and_sha1_only_logs() {
        let log = EventLogBuilder::new().raw_event(4, EV_IPL, &[(0x000C, &[0; 48])], b"x").build();
        let err = EventLog::parse(&log).unwrap_err().to_string();
        assert!(err.contains("not declared"), "{err}");
        let sha1_only = [0u8; 40];
        assert!(EventLog::parse(&sha1_only).is_err());
    }

    #[test]
    fn replay_fails_closed_without_sha256() {
        let log = EventLogBuilder::new().raw_event(4, EV_IPL, &[(TPM_ALG_SHA1, &[0; 20])], b"x").build();
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.replay().unwrap_err(), ReplayError::MissingSha256 { number: 1, type_name: "EV_IPL", pcr: 4 });
    }
}
