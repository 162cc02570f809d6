//! The appliance's network, as the signed runtime configuration states it: which interfaces
//! (by MAC address) get which static IPv4 address, which routes, and the private mesh that runs
//! over them ([`MeshSettings`]). Nothing else is configured: no DHCP, no IPv6 autoconfiguration
//! beyond the kernel's link-local defaults, no DNS. One image serves a fleet: each node
//! configures the entries whose MAC it has.
//!
//! Pure: parsing and checking. PID 1 applies interfaces and routes (`sovereign_init::network`),
//! the runtime runs the mesh.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One interface: its MAC address and the static address it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// `52:54:00:12:34:56` (case-insensitive).
    pub mac: String,
    /// IPv4 address with prefix length, `10.77.0.1/24`.
    pub address: String,
}

/// One route through a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination with prefix length, `0.0.0.0/0` for the default route.
    pub to: String,
    /// The gateway's IPv4 address.
    pub via: String,
}

/// The private mesh (`sovereign-mesh`): the swarm key, where it listens, whom it dials, and what
/// a peer's attestation is checked against besides this release's own reference values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSettings {
    /// The interfaces PID 1 configures (those whose MAC the node has).
    pub interfaces: Vec<Interface>,
    /// Routes, after the addresses.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The TCP port the runtime listens on, on every configured address; nothing else listens.
    pub port: u16,
    /// The swarm key, in the IPFS `swarm.key` format (libp2p pnet).
    pub swarm_key: String,
    /// Peers to dial, as `/ip4/A/tcp/P` multiaddrs (the node's own addresses are skipped).
    pub peers: Vec<String>,
    /// The attestation CA (Ed25519, hex) whose AK certificates make a peer's quotes count.
    pub ak_ca: String,
    /// The TPM manufacturers' EK root certificates (PEM).
    pub ek_roots: String,
    /// The firmware platform profile peers' firmware PCRs must equal (JSON, the shape of
    /// `firmware/qemu-ovmf.json`).
    pub platform_profile: String,
    /// How long an admission lasts before the peer must attest again, in seconds.
    pub admission_ttl_secs: u64,
    /// How often the node sends its newest checkpoint to its witnesses, in seconds.
    pub witness_interval_secs: u64,
}

/// An IPv4 address with its prefix length.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("{text:?} has no /prefix"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{text:?}: bad prefix length"))?;
    Ok((addr, prefix))
}

/// A MAC address's six bytes.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    let bytes: Vec<u8> = parts.iter().filter_map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2)).collect();
    <[u8; 6]>::try_from(bytes).ok().filter(|_| parts.len() == 6).ok_or_else(|| format!("{text:?} is not a MAC address"))
}

impl MeshSettings {
    /// Every field checked: addresses, MACs, routes, port, peers' shape, lifetimes.
    pub fn check(&self) -> Result<(), String> {
        if self.interfaces.is_empty() {
            return Err("mesh: no interfaces".into());
        }
        for i in &self.interfaces {
            parse_mac(&i.mac).map_err(|e| format!("mesh interface: {e}"))?;
            parse_cidr(&i.address).map_err(|e| format!("mesh interface {}: {e}", i.mac))?;
        }
        for r in &self.routes {
            parse_cidr(&r.to).map_err(|e| format!("mesh route: {e}"))?;
            r.via.parse::<Ipv4Addr>().map_err(|_| format!("mesh route via {:?}: not an IPv4 address", r.via))?;
        }
        if self.port == 0 {
            return Err("mesh: port 0".into());
        }
        for p in &self.peers {
            peer_address(p).map_err(|e| format!("mesh peer: {e}"))?;
        }
        if self.admission_ttl_secs == 0 || self.witness_interval_secs == 0 {
            return Err("mesh: admission lifetime and witness interval must be at least a second".into());
        }
        Ok(())
    }
}

/// The IPv4 address and port of a `/ip4/A/tcp/P` multiaddr.
pub fn peer_address(multiaddr: &str) -> Result<(Ipv4Addr, u16), String> {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    match parts.as_slice() {
        ["", "ip4", a, "tcp", p] => Ok((
            a.parse().map_err(|_| format!("{multiaddr:?}: bad address"))?,
            p.parse().map_err(|_| format!("{multiaddr:?}: bad port"))?,
        )),
        _ => Err(format!("{multiaddr:?} is not /ip4/ADDRESS/tcp/PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_macs_and_peers_parse_or_are_refused_by_name() {
        assert_eq!(parse_cidr("10.77.0.1/24"), Ok((Ipv4Addr::new(10, 77, 0, 1), 24)));
        assert!(parse_cidr("10.77.0.1").unwrap_err().contains("no /prefix"));
        assert!(parse_cidr("10.77.0.1/33").unwrap_err().contains("prefix"));
        assert!(parse_cidr("10.77.0/24").unwrap_err().contains("not an IPv4"));
        assert_eq!(parse_mac("52:54:00:AB:cd:01"), Ok([0x52, 0x54, 0, 0xab, 0xcd, 1]));
        assert!(parse_mac("52:54:00:ab:cd").is_err());
        assert!(parse_mac("52:54:00:ab:cd:1").is_err());
        assert!(parse_mac("52:54:00:ab:cd:01:02").is_err());
        assert_eq!(peer_address("/ip4/10.77.0.2/tcp/4001"), Ok((Ipv4Addr::new(10, 77, 0, 2), 4001)));
        assert!(peer_address("/dns/x/tcp/1").is_err());
        assert!(peer_address("/ip4/10.77.0.2/tcp/70000").is_err());
    }
}
