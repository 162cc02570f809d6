//! The appliance's network, brought up by PID 1 from the signed runtime configuration before the
//! runtime starts: the loopback interface, each configured interface whose MAC the node has (up,
//! with its static IPv4 address) and the configured routes — through rtnetlink, nothing else. No
//! DHCP client, no other address, no program.
//!
//! The netlink messages are built by pure functions (tested byte for byte); [`configure`] is the
//! IO edge: it reads the interfaces from /sys and sends each request with an acknowledgement.
//!
//! Must never: configure an interface or route the configuration does not name, or report an
//! interface up whose request the kernel did not acknowledge.

use std::net::Ipv4Addr;
use std::path::Path;

use sovereign_boot_contract::network::{MeshSettings, parse_cidr, parse_mac};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RTN_UNICAST: u8 = 1;

fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = 16 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

fn attribute(body: &mut Vec<u8>, kind: u16, data: &[u8]) {
    body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(data);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

/// RTM_NEWLINK: set interface `index` up.
pub fn link_up(index: u32, seq: u32) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0, 0];
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    message(RTM_NEWLINK, 0, seq, &body)
}

/// RTM_NEWADDR: `address/prefix` on interface `index` (new, not replacing one).
pub fn add_address(index: u32, address: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut body = vec![AF_INET, prefix, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    attribute(&mut body, IFA_LOCAL, &address.octets());
    attribute(&mut body, IFA_ADDRESS, &address.octets());
    message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, &body)
}

/// RTM_NEWROUTE: `to/prefix` via `gateway`, in the main table.
pub fn add_route(to: Ipv4Addr, prefix: u8, gateway: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut body = vec![AF_INET, prefix, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST];
    body.extend_from_slice(&0u32.to_ne_bytes());
    if prefix > 0 {
        attribute(&mut body, RTA_DST, &to.octets());
    }
    attribute(&mut body, RTA_GATEWAY, &gateway.octets());
    message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, &body)
}

/// The kernel's acknowledgement of request `seq`: `Ok` for error 0, the errno otherwise; `None`
/// when `reply` is not an acknowledgement of it.
pub fn acknowledgement(reply: &[u8], seq: u32) -> Option<Result<(), i32>> {
    let word = |at: usize| reply.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    let reply_seq = u32::from_ne_bytes(word(8)?);
    if kind != NLMSG_ERROR || reply_seq != seq {
        return None;
    }
    match i32::from_ne_bytes(word(16)?) {
        0 => Some(Ok(())),
        e => Some(Err(-e)),
    }
}

/// An interface the kernel has: name, index, MAC.
type Present = (String, u32, Option<[u8; 6]>);

/// The interfaces the kernel has, from /sys/class/net.
fn interfaces(sys: &Path) -> Result<Vec<Present>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(sys).map_err(|e| format!("reading {}: {e}", sys.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).unwrap_or_default();
        let Ok(index) = read("ifindex").trim().parse::<u32>() else { continue };
        out.push((name, index, parse_mac(&read("address")).ok()));
    }
    out.sort_by_key(|(_, index, _)| *index);
    Ok(out)
}

struct Netlink {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> Result<Self, String> {
        use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket};
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)
            .map_err(|e| format!("netlink socket: {e}"))?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, 0))
            .map_err(|e| format!("binding the netlink socket: {e}"))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request built for the next sequence number and waits for its acknowledgement.
    fn request(&mut self, what: &str, build: impl FnOnce(u32) -> Vec<u8>) -> Result<(), String> {
        use nix::sys::socket::{MsgFlags, recv, send};
        use std::os::fd::AsRawFd as _;
        self.seq += 1;
        let seq = self.seq;
        send(self.fd.as_raw_fd(), &build(seq), MsgFlags::empty()).map_err(|e| format!("{what}: sending: {e}"))?;
        let mut reply = vec![0u8; 8192];
        for _ in 0..16 {
            let n = recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(|e| format!("{what}: {e}"))?;
            match acknowledgement(&reply[..n], seq) {
                Some(Ok(())) => return Ok(()),
                Some(Err(errno)) => {
                    return Err(format!("{what}: the kernel refused it: {}", nix::errno::Errno::from_raw(errno)));
                }
                None => continue,
            }
        }
        Err(format!("{what}: no acknowledgement from the kernel"))
    }
}

/// Brings up loopback, the configured interfaces this node has, and the routes. One line per
/// step done, or the first failure (one line). No configured interface present is a failure:
/// the node could not join its mesh.
pub fn configure(settings: &MeshSettings) -> Result<Vec<String>, String> {
    let present = interfaces(Path::new("/sys/class/net"))?;
    let mut netlink = Netlink::open()?;
    let mut done = Vec::new();
    if let Some((name, index, _)) = present.iter().find(|(n, _, _)| n == "lo") {
        netlink.request("loopback up", |seq| link_up(*index, seq))?;
        done.push(format!("{name} up"));
    }
    let mut configured = 0;
    for wanted in &settings.interfaces {
        let mac = parse_mac(&wanted.mac)?;
        let (address, prefix) = parse_cidr(&wanted.address)?;
        let Some((name, index, _)) = present.iter().find(|(_, _, m)| *m == Some(mac)) else { continue };
        netlink
            .request(&format!("{name}: address {}", wanted.address), |seq| add_address(*index, address, prefix, seq))?;
        netlink.request(&format!("{name} up"), |seq| link_up(*index, seq))?;
        done.push(format!("{name} ({}) up with {}", wanted.mac.to_lowercase(), wanted.address));
        configured += 1;
    }
    if configured == 0 {
        let seen: Vec<String> = present
            .iter()
            .filter(|(n, _, _)| n != "lo")
            .map(|(n, _, m)| format!("{n} {}", m.map(hex::encode).unwrap_or_default()))
            .collect();
        return Err(format!(
            "none of the {} configured interfaces is present (this node has: {})",
            settings.interfaces.len(),
            if seen.is_empty() { "no network interface".to_string() } else { seen.join(", ") }
        ));
    }
    for route in &settings.routes {
        let (to, prefix) = parse_cidr(&route.to)?;
        let via: Ipv4Addr = route.via.parse().map_err(|_| format!("route via {:?}: not an IPv4 address", route.via))?;
        netlink.request(&format!("route {} via {}", route.to, route.via), |seq| add_route(to, prefix, via, seq))?;
        done.push(format!("route {} via {}", route.to, route.via));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_rtnetlink_messages_byte_for_byte() {
        let up = link_up(2, 7);
        assert_eq!(up.len(), 32);
        assert_eq!(u32::from_ne_bytes(up[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(up[4..6].try_into().unwrap()), RTM_NEWLINK);
        assert_eq!(u16::from_ne_bytes(up[6..8].try_into().unwrap()), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(up[8..12].try_into().unwrap()), 7);
        assert_eq!(i32::from_ne_bytes(up[20..24].try_into().unwrap()), 2);
        assert_eq!(&up[24..32], &[1, 0, 0, 0, 1, 0, 0, 0]);

        let addr = add_address(3, Ipv4Addr::new(10, 77, 0, 1), 24, 8);
        assert_eq!(addr.len(), 16 + 8 + 8 + 8);
        assert_eq!(&addr[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(&addr[24..32], &[8, 0, IFA_LOCAL as u8, 0, 10, 77, 0, 1]);
        assert_eq!(&addr[32..40], &[8, 0, IFA_ADDRESS as u8, 0, 10, 77, 0, 1]);
        assert_eq!(u16::from_ne_bytes(addr[6..8].try_into().unwrap()), 0x1 | 0x4 | 0x200 | 0x400);

        let default = add_route(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 77, 0, 254), 9);
        assert_eq!(default.len(), 16 + 12 + 8, "a default route carries no destination");
        assert_eq!(&default[28..36], &[8, 0, RTA_GATEWAY as u8, 0, 10, 77, 0, 254]);
        let net = add_route(Ipv4Addr::new(10, 88, 0, 0), 16, Ipv4Addr::new(10, 77, 0, 254), 10);
        assert_eq!(&net[28..36], &[8, 0, RTA_DST as u8, 0, 10, 88, 0, 0]);
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence_and_carry_the_errno() {
        let ack = |seq: u32, error: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&error.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        assert_eq!(acknowledgement(&ack(4, 0), 4), Some(Ok(())));
        assert_eq!(acknowledgement(&ack(4, -17), 4), Some(Err(17)));
        assert_eq!(acknowledgement(&ack(3, 0), 4), None, "another request's");
        assert_eq!(acknowledgement(&[0; 5], 4), None, "truncated");
        assert_eq!(acknowledgement(&[], 4), None);
    }
}
