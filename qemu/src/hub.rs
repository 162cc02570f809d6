//! A private Ethernet segment for appliances under test: an L2 hub in this process that repeats
//! every frame a guest sends to every other guest, over unix datagram sockets (QEMU's `dgram`
//! netdev). Nothing of it touches a host interface: a guest's packets reach the other guests and
//! nothing else.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A hub with a fixed number of ports; dropped, it stops.
pub struct Hub {
    dir: tempfile::TempDir,
    ports: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    sockets: Arc<Vec<UnixDatagram>>,
    /// Where a probe listens: every frame any guest sends, copied.
    tap: Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>,
}

impl Hub {
    /// A hub with `ports` ports, repeating frames from now on.
    pub fn new(ports: usize) -> std::io::Result<Hub> {
        let dir = tempfile::Builder::new().prefix("sovereign-hub-").tempdir()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        for i in 0..ports {
            let socket = UnixDatagram::bind(dir.path().join(format!("hub-{i}.sock")))?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            sockets.push(socket);
        }
        let sockets = Arc::new(sockets);
        let guests: Arc<Vec<PathBuf>> =
            Arc::new((0..ports).map(|i| dir.path().join(format!("guest-{i}.sock"))).collect());
        let mut threads = Vec::new();
        let tap: Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>> = Arc::new(Mutex::new(None));
        for i in 0..ports {
            let (sockets, guests, stop, tap) = (sockets.clone(), guests.clone(), stop.clone(), tap.clone());
            threads.push(std::thread::spawn(move || {
                let mut frame = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sockets[i].recv(&mut frame) else { continue };
                    if let Some(tap) = tap.lock().ok().and_then(|t| t.clone()) {
                        let _ = tap.send(frame[..n].to_vec());
                    }
                    for (j, guest) in guests.iter().enumerate() {
                        if j != i {
                            // A guest not running yet simply misses the frame, as on a wire.
                            let _ = sockets[j].send_to(&frame[..n], guest);
                        }
                    }
                }
            }));
        }
        Ok(Hub { dir, ports, stop, threads, sockets, tap })
    }

    /// QEMU arguments that plug a virtio-net NIC with `mac` into port `port`: no option ROM, and
    /// no PXE boot entries in the firmware (so the NIC changes no measured boot variable).
    pub fn qemu_args(&self, port: usize, mac: &str) -> Vec<String> {
        assert!(port < self.ports, "hub port {port} of {}", self.ports);
        let path = |name: String| self.dir.path().join(name);
        // QEMU binds the guest's end afresh at each boot.
        let _ = std::fs::remove_file(path(format!("guest-{port}.sock")));
        vec![
            "-netdev".into(),
            format!(
                "dgram,id=mesh,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                path(format!("guest-{port}.sock")).display(),
                path(format!("hub-{port}.sock")).display()
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=mesh,mac={mac},romfile="),
            "-fw_cfg".into(),
            "name=opt/org.tianocore/IPv4PXESupport,string=n".into(),
            "-fw_cfg".into(),
            "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
        ]
    }

    /// Probes every TCP port of the guest on hub port `port` (MAC `mac`, address `ip`) from
    /// outside, as a host on the segment would (`10.77.0.250`, answering the guest's ARP): a SYN
    /// to each port; SYN-ACK means open, RST closed. Ports that answered neither are probed
    /// again, pass after pass, until `timeout`. Returns the open ports and how many ports answered
    /// at all.
    pub fn scan_tcp(&self, port: usize, mac: [u8; 6], ip: Ipv4Addr, timeout: Duration) -> (BTreeSet<u16>, usize) {
        let (tx, rx) = mpsc::channel();
        if let Ok(mut t) = self.tap.lock() {
            *t = Some(tx);
        }
        let guest = self.dir.path().join(format!("guest-{port}.sock"));
        let send = |frame: &[u8]| {
            let _ = self.sockets[port].send_to(frame, &guest);
        };
        let mut open = BTreeSet::new();
        let mut answered = BTreeSet::new();
        let deadline = Instant::now() + timeout;
        let handle = |frame: &[u8], open: &mut BTreeSet<u16>, answered: &mut BTreeSet<u16>| {
            if let Some(reply) = probe::arp_reply(frame, PROBE_MAC, PROBE_IP) {
                send(&reply);
            } else if let Some((from_port, syn_ack)) = probe::tcp_answer(frame, ip, PROBE_IP, PROBE_PORT) {
                answered.insert(from_port);
                if syn_ack {
                    open.insert(from_port);
                }
            }
        };
        // Pass after pass, the ports not answered yet are probed again until the deadline: a
        // guest slowed by a loaded host drops frames from its virtio queue, and a port counts as
        // reached only once it answered (a port that never does is the test's failure to name).
        while Instant::now() < deadline {
            let wanted: Vec<u16> = (1..=u16::MAX).filter(|p| !answered.contains(p)).collect();
            if wanted.is_empty() {
                break;
            }
            for (n, target) in wanted.iter().enumerate() {
                send(&probe::syn(PROBE_MAC, mac, PROBE_IP, ip, PROBE_PORT, *target, n as u32));
                // Keep up with the answers (and the guest's ARP) while sending.
                while let Ok(frame) = rx.try_recv() {
                    handle(&frame, &mut open, &mut answered);
                }
                if n % 256 == 255 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let pass_end = (Instant::now() + Duration::from_secs(10)).min(deadline);
            while Instant::now() < pass_end && answered.len() < usize::from(u16::MAX) {
                if let Ok(frame) = rx.recv_timeout(Duration::from_millis(100)) {
                    handle(&frame, &mut open, &mut answered);
                }
            }
        }
        if let Ok(mut t) = self.tap.lock() {
            *t = None;
        }
        (open, answered.len())
    }

    /// The hub's directory (its sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The prober's place on the segment.
const PROBE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfa];
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 250);
const PROBE_PORT: u16 = 40_000;

/// Ethernet, ARP, IPv4 and TCP frames for the port probe (pure).
mod probe {
    use std::net::Ipv4Addr;

    fn checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += u32::from(word);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A TCP SYN from `src` to `dst:port`.
    pub fn syn(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        seq: u32,
    ) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20);
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[0x50, 0x02]); // 20-byte header, SYN
        tcp.extend_from_slice(&1024u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        let sum = checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = Vec::with_capacity(54);
        frame.extend_from_slice(&dst_mac);
        frame.extend_from_slice(&src_mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        frame
    }

    /// The ARP reply to a request for `ip`, if `frame` is one.
    pub fn arp_reply(frame: &[u8], mac: [u8; 6], ip: Ipv4Addr) -> Option<Vec<u8>> {
        let arp = frame.get(14..42)?;
        if frame.get(12..14)? != [0x08, 0x06] || arp[6..8] != [0, 1] || arp[24..28] != ip.octets() {
            return None;
        }
        let (asker_mac, asker_ip) = (&arp[8..14], &arp[14..18]);
        let mut reply = Vec::with_capacity(42);
        reply.extend_from_slice(asker_mac);
        reply.extend_from_slice(&mac);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        reply.extend_from_slice(&mac);
        reply.extend_from_slice(&ip.octets());
        reply.extend_from_slice(asker_mac);
        reply.extend_from_slice(asker_ip);
        Some(reply)
    }

    /// A TCP answer from `from` to `to:port`: (the port it answered from, SYN-ACK or not).
    pub fn tcp_answer(frame: &[u8], from: Ipv4Addr, to: Ipv4Addr, port: u16) -> Option<(u16, bool)> {
        if frame.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip = frame.get(14..)?;
        let header = usize::from(ip.first()? & 0x0f) * 4;
        if ip.get(9)? != &6 || ip.get(12..16)? != from.octets() || ip.get(16..20)? != to.octets() {
            return None;
        }
        let tcp = ip.get(header..)?;
        let (sport, dport) =
            (u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]), u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]));
        let flags = *tcp.get(13)?;
        if dport != port {
            return None;
        }
        match (flags & 0x12 == 0x12, flags & 0x04 != 0) {
            (true, _) => Some((sport, true)),
            (false, true) => Some((sport, false)),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_syn_has_valid_ip_and_tcp_checksums() {
            let f = syn([2; 6], [4; 6], Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 40000, 4001, 7);
            assert_eq!(f.len(), 54);
            assert_eq!(checksum(&[&f[14..34]]), 0, "IPv4 header checksum");
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&f[26..34]);
            pseudo.extend_from_slice(&[0, 6, 0, 20]);
            assert_eq!(checksum(&[&pseudo, &f[34..54]]), 0, "TCP checksum");
        }

        #[test]
        fn arp_requests_for_the_prober_are_answered_and_others_not() {
            let mut req = vec![0xff; 6];
            req.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
            req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, 0x52, 0x54, 0, 0, 0, 1, 10, 77, 0, 1]);
            req.extend_from_slice(&[0; 6]);
            req.extend_from_slice(&[10, 77, 0, 250]);
            let reply = arp_reply(&req, [2, 0, 0, 0, 0, 0xfa], Ipv4Addr::new(10, 77, 0, 250)).unwrap();
            assert_eq!(&reply[..6], &[0x52, 0x54, 0, 0, 0, 1]);
            assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
            assert_eq!(&reply[38..42], &[10, 77, 0, 1]);
            assert!(arp_reply(&req, [2; 6], Ipv4Addr::new(10, 77, 0, 9)).is_none());
        }
    }
}
