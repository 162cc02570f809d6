//! The NVIDIA device nodes, for an image that carries the GPU driver (`sovereign-image build
//! --gpu-driver`): on a normal system `nvidia-modprobe` (a setuid helper the appliance does not
//! have) makes them; here PID 1 does, after the driver's modules are loaded, and gives them to
//! the runtime. Which nodes is pure ([`nvidia_nodes`]); making them is PID 1's.
//!
//! Must never: make a node for a driver that did not register its character devices, or guess
//! a major number (each is read from `/proc/devices`).

/// One character device node to make: its path, major and minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharNode {
    /// Where, under `/dev`.
    pub path: String,
    /// Major number (from `/proc/devices`).
    pub major: u64,
    /// Minor number.
    pub minor: u64,
}

/// The major number `/proc/devices` lists for `name` among its character devices.
fn char_major(proc_devices: &str, name: &str) -> Option<u64> {
    let chars = proc_devices.split("Block devices:").next().unwrap_or("");
    chars.lines().find_map(|line| {
        let (major, driver) = line.trim().split_once(char::is_whitespace)?;
        (driver.trim() == name).then(|| major.parse().ok()).flatten()
    })
}

/// The nodes the NVIDIA driver's registered devices need: `/dev/nvidiactl` (minor 255) and
/// `/dev/nvidia0`… for each of `gpus` devices on the frontend's major, and `/dev/nvidia-uvm`,
/// `/dev/nvidia-uvm-tools` when the UVM module registered. Empty when the driver registered
/// nothing (no module, or not loaded).
pub fn nvidia_nodes(proc_devices: &str, gpus: usize) -> Vec<CharNode> {
    let mut nodes = Vec::new();
    let frontend = char_major(proc_devices, "nvidia-frontend").or_else(|| char_major(proc_devices, "nvidia"));
    if let Some(major) = frontend {
        nodes.push(CharNode { path: "/dev/nvidiactl".into(), major, minor: 255 });
        for i in 0..gpus.min(254) {
            nodes.push(CharNode { path: format!("/dev/nvidia{i}"), major, minor: i as u64 });
        }
        if let Some(uvm) = char_major(proc_devices, "nvidia-uvm") {
            nodes.push(CharNode { path: "/dev/nvidia-uvm".into(), major: uvm, minor: 0 });
            nodes.push(CharNode { path: "/dev/nvidia-uvm-tools".into(), major: uvm, minor: 1 });
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_DRIVER: &str = "Character devices:\n  1 mem\n  4 /dev/vc/0\n195 nvidia-frontend\n 10 misc\n510 nvidia-uvm\n\nBlock devices:\n  8 sd\n195 nvidia\n";

    #[test]
    fn nodes_follow_the_registered_devices_and_their_majors() {
        let nodes = nvidia_nodes(WITH_DRIVER, 2);
        let got: Vec<(&str, u64, u64)> = nodes.iter().map(|n| (n.path.as_str(), n.major, n.minor)).collect();
        assert_eq!(
            got,
            [
                ("/dev/nvidiactl", 195, 255),
                ("/dev/nvidia0", 195, 0),
                ("/dev/nvidia1", 195, 1),
                ("/dev/nvidia-uvm", 510, 0),
                ("/dev/nvidia-uvm-tools", 510, 1),
            ]
        );
        // No driver registered (a block device of that name does not count): nothing.
        assert!(nvidia_nodes("Character devices:\n  1 mem\n\nBlock devices:\n195 nvidia\n", 1).is_empty());
        assert!(nvidia_nodes("", 4).is_empty());
        // Without UVM: the control and GPU nodes only.
        let no_uvm = nvidia_nodes("Character devices:\n195 nvidia\n", 1);
        assert_eq!(no_uvm.len(), 2);
    }
}
