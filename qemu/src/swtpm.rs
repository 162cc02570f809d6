//! A private software TPM (swtpm) per caller, provisioned like a real one.
//!
//! Each [`Swtpm`] owns a temporary directory holding its TPM state, a local certificate
//! authority and the EK certificates that CA issued; the swtpm process listens on loopback
//! ports chosen at start (never 2321/2322, which another process on the machine may own) and
//! is killed by its own PID when the value is dropped, including when a test panics.

use std::fs;
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Ports that other TPM simulators on the machine use by default; never ours.
const RESERVED_PORTS: [u16; 2] = [2321, 2322];

/// How long swtpm may take to start listening before we give up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong while provisioning or running a private swtpm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwtpmError {
    /// A tool the harness needs is not installed.
    #[error("`{tool}` is not installed or not runnable ({source}); install it with: apt-get install swtpm swtpm-tools")]
    ToolMissing {
        /// The program that could not be started.
        tool: &'static str,
        /// Why it could not be started.
        source: io::Error,
    },
    /// `swtpm_setup` ran but failed.
    #[error("swtpm_setup failed with {status}: {output}")]
    SetupFailed {
        /// Exit status of swtpm_setup.
        status: String,
        /// Its combined output, to diagnose the failure.
        output: String,
    },
    /// swtpm did not start listening on its ports.
    #[error("swtpm did not start listening on 127.0.0.1:{port}: {reason}")]
    NotListening {
        /// The command port we asked for.
        port: u16,
        /// What was observed.
        reason: String,
    },
    /// A file or directory operation in the harness's own temp dir failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the harness was doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SwtpmError + use<> {
    let path = path.to_path_buf();
    move |source| SwtpmError::Io { action, path, source }
}

/// How the TPM is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// TCP command + control ports on loopback (for tss-esapi's swtpm TCTI).
    Tcp,
    /// One unix control socket, the way QEMU's `tpm-emulator` backend talks to swtpm.
    Qemu,
}

/// A running, provisioned, private software TPM 2.0.
#[derive(Debug)]
pub struct Swtpm {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    mode: Mode,
}

impl Swtpm {
    /// Provisions a fresh TPM (EK certificates for RSA-2048 and ECC from a CA created inside
    /// this instance's temp dir, platform certificate, sha256 PCR bank) and starts it.
    pub fn start() -> Result<Self, SwtpmError> {
        Self::start_mode(Mode::Tcp)
    }

    /// Like [`Swtpm::start`], but serving QEMU's `tpm-emulator` backend on a unix control
    /// socket ([`Swtpm::qemu_socket`]); the firmware in the guest sends TPM2_Startup.
    pub fn start_for_qemu() -> Result<Self, SwtpmError> {
        Self::start_mode(Mode::Qemu)
    }

    fn start_mode(mode: Mode) -> Result<Self, SwtpmError> {
        let dir = tempfile::Builder::new()
            .prefix("sovereign-swtpm-")
            .tempdir()
            .map_err(io_err("creating temp dir under", &std::env::temp_dir()))?;
        provision(dir.path())?;
        let mut tpm = Swtpm { dir, child: None, port: 0, mode };
        tpm.launch()?;
        Ok(tpm)
    }

    /// The unix socket QEMU connects to (`-chardev socket,path=…`), in QEMU mode.
    pub fn qemu_socket(&self) -> PathBuf {
        self.dir.path().join("swtpm-ctrl.sock")
    }

    /// The TCTI string that reaches this TPM (for `sovereign_measured_boot::Tpm::open`).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Simulates a power cycle: stops the TPM (state is kept on disk) and starts it again.
    /// PCRs reset; persistent objects, NV indices and counters survive.
    pub fn power_cycle(&mut self) -> Result<(), SwtpmError> {
        self.stop();
        self.launch()
    }

    /// Runs `f` with this TPM served on loopback TCP (`f` gets the TCTI string), then serves
    /// again the way it did before. What a factory provisioning station does before the first
    /// power-on: the TPM's state (its seeds, NV) is kept; PCRs reset, as at any power cycle.
    pub fn on_host<T>(&mut self, f: impl FnOnce(&str) -> T) -> Result<T, SwtpmError> {
        let mode = self.mode;
        self.stop();
        self.mode = Mode::Tcp;
        let outcome = self.launch().map(|()| f(&self.tcti()));
        self.stop();
        self.mode = mode;
        self.launch()?;
        outcome
    }

    /// The EK certificate (DER) the local CA issued for the TPM's RSA-2048 endorsement key.
    pub fn ek_certificate_rsa(&self) -> Result<Vec<u8>, SwtpmError> {
        let path = self.dir.path().join("ek-rsa2048.crt");
        fs::read(&path).map_err(io_err("reading EK certificate", &path))
    }

    /// The local CA's certificates (PEM): the issuing CA followed by its root.
    pub fn ca_certificates_pem(&self) -> Result<String, SwtpmError> {
        let mut out = String::new();
        for name in ["issuercert.pem", "swtpm-localca-rootca-cert.pem"] {
            let path = self.dir.path().join("ca").join(name);
            out.push_str(&fs::read_to_string(&path).map_err(io_err("reading CA certificate", &path))?);
        }
        Ok(out)
    }

    /// A second TPM whose state is this one's at this instant (seeds, NV, counters): what a
    /// machine stopped now would find at its next power-on, while this one goes on. Served
    /// the same way as this one. Call it with no command in flight.
    pub fn fork(&self) -> Result<Self, SwtpmError> {
        let dir = tempfile::Builder::new()
            .prefix("sovereign-swtpm-")
            .tempdir()
            .map_err(io_err("creating temp dir under", &std::env::temp_dir()))?;
        copy_tree(self.dir.path(), dir.path())?;
        let mut tpm = Swtpm { dir, child: None, port: 0, mode: self.mode };
        tpm.launch()?;
        Ok(tpm)
    }

    /// The directory this instance owns (state, CA, logs); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the running swtpm process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `swtpm socket --tpm2` on this instance's state, logging into its directory.
    fn swtpm_command(&self) -> Command {
        let mut cmd = Command::new("swtpm");
        cmd.arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.dir.path().join("state").display()))
            .arg("--log")
            .arg(format!("file={},level=1", self.dir.path().join("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    fn launch(&mut self) -> Result<(), SwtpmError> {
        if self.mode == Mode::Qemu {
            return self.launch_qemu();
        }
        let mut last_reason = String::from("no free port pair found");
        for _attempt in 0..8 {
            let port = free_port_pair()?;
            let mut child = self
                .swtpm_command()
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .spawn()
                .map_err(|source| SwtpmError::ToolMissing { tool: "swtpm", source })?;
            match wait_listening(&mut child, port) {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return Ok(());
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_reason = reason;
                }
            }
        }
        Err(SwtpmError::NotListening { port: self.port, reason: last_reason })
    }

    fn launch_qemu(&mut self) -> Result<(), SwtpmError> {
        let socket = self.qemu_socket();
        let _ = fs::remove_file(&socket);
        let mut child = self
            .swtpm_command()
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .spawn()
            .map_err(|source| SwtpmError::ToolMissing { tool: "swtpm", source })?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SwtpmError::NotListening { port: 0, reason: format!("swtpm exited with {status}") });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SwtpmError::NotListening {
                    port: 0,
                    reason: format!("{} never appeared", socket.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two consecutive free loopback ports (command, control), avoiding the reserved ones.
fn free_port_pair() -> Result<u16, SwtpmError> {
    for _ in 0..64 {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .map_err(io_err("binding a probe socket on", Path::new("127.0.0.1")))?;
        let port =
            listener.local_addr().map_err(io_err("reading probe socket address on", Path::new("127.0.0.1")))?.port();
        let Some(ctrl) = port.checked_add(1) else {
            continue;
        };
        if RESERVED_PORTS.contains(&port) || RESERVED_PORTS.contains(&ctrl) {
            continue;
        }
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ctrl)).is_ok() {
            return Ok(port);
        }
    }
    Err(SwtpmError::NotListening { port: 0, reason: "no free loopback port pair".into() })
}

fn wait_listening(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return Err(format!("swtpm exited with {status}: {}", stderr.trim()));
        }
        let ctrl_up = TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port + 1)).is_ok();
        if ctrl_up && TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
            // The probe connections above were accepted and closed by *our* child, which is
            // still alive: confirm it did not die because the port belonged to someone else.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(None) = child.try_wait() {
                return Ok(());
            }
            continue;
        }
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates the CA configuration inside `dir` and manufactures the TPM state there.
fn provision(dir: &Path) -> Result<(), SwtpmError> {
    let ca = dir.join("ca");
    let state = dir.join("state");
    for d in [&ca, &state] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    let localca_conf = dir.join("swtpm-localca.conf");
    let localca_options = dir.join("swtpm-localca.options");
    let setup_conf = dir.join("swtpm_setup.conf");
    let files = [
        (
            &localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        ),
        (
            &localca_options,
            "--platform-manufacturer Sovereign\n--platform-version 2.1\n--platform-model swtpm-test\n".to_string(),
        ),
        (
            &setup_conf,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca_conf.display(),
                localca_options.display()
            ),
        ),
    ];
    for (path, text) in files {
        fs::write(path, text).map_err(io_err("writing", path))?;
    }
    let output = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite", "--pcr-banks", "sha256"])
        .arg("--config")
        .arg(&setup_conf)
        .arg("--write-ek-cert-files")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SwtpmError::ToolMissing { tool: "swtpm_setup", source })?;
    if !output.status.success() {
        return Err(SwtpmError::SetupFailed {
            status: output.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(())
}

/// Copies the files under `from` into `to` (sockets and other special files are skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<(), SwtpmError> {
    fs::create_dir_all(to).map_err(io_err("creating", to))?;
    for entry in fs::read_dir(from).map_err(io_err("reading", from))? {
        let entry = entry.map_err(io_err("reading", from))?;
        let kind = entry.file_type().map_err(io_err("inspecting", &entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).map_err(io_err("copying", &entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_private_instances_and_kills_them_on_drop() {
        let a = Swtpm::start().expect("swtpm a");
        let b = Swtpm::start().expect("swtpm b");
        assert_ne!(a.tcti(), b.tcti(), "each instance has its own ports");
        assert!(!a.tcti().contains("port=2321"));
        let pid = a.pid().expect("running");
        let dir = a.dir().to_path_buf();
        assert!(a.ek_certificate_rsa().expect("ek cert").len() > 100);
        assert!(a.ca_certificates_pem().expect("ca").contains("BEGIN CERTIFICATE"));
        drop(a);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "swtpm {pid} still running after drop");
        assert!(!dir.exists(), "temp dir {} left behind", dir.display());
        drop(b);
    }

    #[test]
    fn killed_even_when_the_owner_panics() {
        let pid = std::sync::Mutex::new(None);
        let result = std::panic::catch_unwind(|| {
            let tpm = Swtpm::start().expect("swtpm");
            *pid.lock().expect("lock") = tpm.pid();
            panic!("test failure while the TPM is running");
        });
        assert!(result.is_err());
        let pid = pid.lock().expect("lock").expect("pid recorded");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "swtpm {pid} survived a panic");
    }
}
