//! What crosses the TPM bus: a recording proxy between tss-esapi and a private swtpm sees every
//! command and response byte. Sealing and unsealing the node keys must not show the secret's
//! bytes on it, and every session they start must be salted by a TPM-resident key: parameter
//! encryption under an unsalted, unbound session uses a key derived from the nonces alone, which
//! anyone on the bus reads, so bytes that merely look random are not enough. The same recorder
//! does see bytes that travel in clear (a PCR extend's digest, GetRandom's output), so it
//! would catch a leak.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sovereign_measured_boot::pcr::{PcrSelection, Sha256Digest};
use sovereign_measured_boot::tpm::Tpm;
use sovereign_qemu::Swtpm;

/// Everything one direction carried, in order.
type Recording = Arc<Mutex<Vec<u8>>>;

/// The command and response streams of the command channel.
struct Bus {
    commands: Recording,
    responses: Recording,
}

impl Bus {
    fn clear(&self) {
        self.commands.lock().unwrap().clear();
        self.responses.lock().unwrap().clear();
    }

    /// Whether any 8-byte window of `needle` appears in either direction.
    fn seen(&self, needle: &[u8]) -> bool {
        [&self.commands, &self.responses].iter().any(|r| {
            let bytes = r.lock().unwrap();
            needle.windows(8).any(|w| bytes.windows(8).any(|b| b == w))
        })
    }

    /// For every TPM2_Create and TPM2_Unseal sent (the commands that carry the secret), its
    /// name and whether the session authorizing it was started salted (a `tpmKey` other than
    /// TPM_RH_NULL and a non-empty encrypted salt). The command channel carries raw TPM
    /// commands and responses in order, so the n-th response answers the n-th command.
    fn secret_commands(&self) -> Vec<(&'static str, bool)> {
        const START_AUTH_SESSION: u32 = 0x176;
        const TPM_RH_NULL: u32 = 0x4000_0007;
        let commands = frames(&self.commands.lock().unwrap());
        let responses = frames(&self.responses.lock().unwrap());
        let mut salted = std::collections::BTreeMap::new();
        let mut out = Vec::new();
        for (command, response) in commands.iter().zip(&responses) {
            match be32(command, 6) {
                START_AUTH_SESSION => {
                    // handles tpmKey, bind; parameters nonceCaller (TPM2B), encryptedSalt (TPM2B).
                    let tpm_key = be32(command, 10);
                    let nonce = be16(command, 18);
                    let salt = be16(command, 20 + nonce);
                    if be32(response, 6) == 0 {
                        salted.insert(be32(response, 10), tpm_key != TPM_RH_NULL && salt > 0);
                    }
                }
                // One handle, then the authorization area's size, then its first session.
                0x153 => out.push(("Create", salted.get(&be32(command, 18)) == Some(&true))),
                0x15E => out.push(("Unseal", salted.get(&be32(command, 18)) == Some(&true))),
                _ => {}
            }
        }
        out
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]])).unwrap_or(0)
}

fn be16(b: &[u8], at: usize) -> usize {
    b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]) as usize).unwrap_or(0)
}

/// Splits a stream of TPM commands or responses at their size fields.
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 10 <= bytes.len() {
        let size = (be32(bytes, at + 2) as usize).max(10);
        out.push(bytes[at..(at + size).min(bytes.len())].to_vec());
        at += size;
    }
    out
}

/// Listens on a free consecutive port pair (the swtpm TCTI uses `port` for commands and
/// `port + 1` for control) and forwards each to `target`/`target + 1`, recording the command
/// channel.
fn proxy(target: u16) -> (u16, Bus) {
    let bus = Bus { commands: Arc::default(), responses: Arc::default() };
    for _ in 0..32 {
        let commands = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = commands.local_addr().unwrap().port();
        let Ok(control) = TcpListener::bind(("127.0.0.1", port + 1)) else { continue };
        forward(commands, target, Some((Arc::clone(&bus.commands), Arc::clone(&bus.responses))));
        forward(control, target + 1, None);
        return (port, bus);
    }
    panic!("no free consecutive port pair for the recording proxy");
}

fn forward(listener: TcpListener, target: u16, recording: Option<(Recording, Recording)>) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            let (to_tpm, from_tpm) = match &recording {
                Some((c, r)) => (Some(Arc::clone(c)), Some(Arc::clone(r))),
                None => (None, None),
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), to_tpm);
            pipe(server, client, from_tpm);
        }
    });
}

fn pipe(mut from: TcpStream, mut to: TcpStream, recording: Option<Recording>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Some(r) = &recording {
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn port_of(tcti: &str) -> u16 {
    tcti.rsplit("port=").next().unwrap().parse().unwrap()
}

#[test]
fn sealed_and_unsealed_keys_never_cross_the_bus_in_clear() {
    let swtpm = Swtpm::start().unwrap();
    let (port, bus) = proxy(port_of(&swtpm.tcti()));
    let mut tpm = Tpm::open(&format!("swtpm:host=127.0.0.1,port={port}")).unwrap();

    // The node keys' shape: 64 bytes from the TPM's RNG. GetRandom's answer crosses in clear —
    // the recorder must see it, or this test could not see a leak either.
    let secret = tpm.random(64).unwrap();
    assert!(bus.seen(&secret), "the recorder did not capture a response in clear");
    bus.clear();

    let selection = PcrSelection::new([16]).unwrap();
    let current = tpm.pcr_read(&selection).unwrap();
    let blob = tpm.seal_to_pcrs(&secret, &current).unwrap();
    let unsealed = tpm.unseal_with_pcrs(&blob, &selection).unwrap();
    assert_eq!(unsealed, secret, "the round trip through the TPM changed the secret");
    let carried = bus.commands.lock().unwrap().len() + bus.responses.lock().unwrap().len();
    assert!(carried > 1000, "the recorder saw only {carried} bytes of seal and unseal traffic");
    assert!(!bus.seen(&secret), "the secret crossed the TPM bus in clear while sealing or unsealing");
    // The commands that carry the secret run under sessions salted by a TPM-resident key.
    let secret_commands = bus.secret_commands();
    let names: Vec<&str> = secret_commands.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["Create", "Unseal"], "the parser or the recorder missed the seal or the unseal");
    for (name, salted) in &secret_commands {
        assert!(salted, "TPM2_{name} ran under an unsalted session: its parameter key is derivable from the bus");
    }

    // A command parameter in clear (PCR extend's digest) is seen as well.
    let digest = Sha256Digest(<[u8; 32]>::try_from(&secret[..32]).unwrap());
    tpm.pcr_extend(16, &digest).unwrap();
    assert!(bus.seen(&digest.0), "the recorder did not capture a command in clear");
    drop(tpm);
    drop(swtpm);
}
