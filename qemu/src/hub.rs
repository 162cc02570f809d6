//! A private Ethernet segment for appliances under test: an L2 hub in this process that repeats
//! every frame a guest sends to every other guest, over unix datagram sockets (QEMU's `dgram`
//! netdev). Nothing of it touches a host interface: a guest's packets reach the other guests and
//! nothing else.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A hub with a fixed number of ports; dropped, it stops.
pub struct Hub {
    dir: tempfile::TempDir,
    ports: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
        for i in 0..ports {
            let (sockets, guests, stop) = (sockets.clone(), guests.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut frame = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sockets[i].recv(&mut frame) else { continue };
                    for (j, guest) in guests.iter().enumerate() {
                        if j != i {
                            // A guest not running yet simply misses the frame, as on a wire.
                            let _ = sockets[j].send_to(&frame[..n], guest);
                        }
                    }
                }
            }));
        }
        Ok(Hub { dir, ports, stop, threads })
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
