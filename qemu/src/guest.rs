//! A QEMU + OVMF guest booting a Sovereign disk image with a private swtpm: q35,
//! `-nodefaults`, serial console captured (to a file in the appliance's directory and, with
//! `SOVEREIGN_SERIAL=1`, streamed to stderr), QMP for the ACPI power button, a timeout that
//! kills a hung guest, and every process it started killed by PID on drop.
//!
//! An [`Appliance`] is a disk + UEFI variable store + TPM that persist across boots, so a
//! second boot is a real second boot.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::swtpm::{Swtpm, SwtpmError};

/// OVMF code (read-only) as Debian installs it.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable-store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF code built with Secure Boot support (needs SMM and a secure pflash).
pub const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The project's variable store: [`OVMF_VARS`] with the development PK, KEK and db enrolled and
/// Secure Boot on (`cargo xtask firmware-vars` regenerates it from `firmware/secure-boot/`).
pub const SECURE_BOOT_VARS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/ovmf-vars-secureboot.fd");

/// The firmware an appliance boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF with Secure Boot on and the project's keys enrolled: only a UKI signed by the db key
    /// runs. What an appliance ships with.
    SecureBoot,
    /// OVMF without Secure Boot (an attacker who cleared the firmware's variables): any EFI
    /// binary runs, and the stub honours a command line from the boot path.
    SecureBootOff,
}

impl Firmware {
    fn code(self) -> &'static str {
        match self {
            Firmware::SecureBoot => OVMF_CODE_SECURE_BOOT,
            Firmware::SecureBootOff => OVMF_CODE,
        }
    }

    fn vars_template(self) -> &'static str {
        match self {
            Firmware::SecureBoot => SECURE_BOOT_VARS,
            Firmware::SecureBootOff => OVMF_VARS,
        }
    }
}

/// What went wrong with a guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The TPM could not be started.
    #[error(transparent)]
    Tpm(#[from] SwtpmError),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// QEMU could not be started.
    #[error("cannot start qemu-system-x86_64 ({0}); install it with: apt-get install qemu-system-x86 ovmf")]
    Qemu(String),
    /// The expected console output did not appear in time.
    #[error("timed out after {seconds}s waiting for {needle:?}; console so far:\n{console}")]
    Timeout {
        /// What was awaited.
        needle: String,
        /// How long.
        seconds: u64,
        /// The console tail.
        console: String,
    },
    /// QEMU exited before the expected console output appeared (the guest reset or powered
    /// off, or QEMU failed).
    #[error(
        "QEMU exited ({status}) after {seconds}s before {needle:?} appeared; QEMU said: {stderr:?}; console so far:\n{console}"
    )]
    Exited {
        /// What was awaited.
        needle: String,
        /// QEMU's exit status.
        status: String,
        /// How long after the boot.
        seconds: u64,
        /// What QEMU wrote to its standard error.
        stderr: String,
        /// The console tail.
        console: String,
    },
    /// The QMP conversation failed.
    #[error("QMP: {0}")]
    Qmp(String),
}

/// A persistent appliance: disk image, UEFI variables and TPM.
#[derive(Debug)]
pub struct Appliance {
    dir: tempfile::TempDir,
    disk: PathBuf,
    vars: PathBuf,
    firmware: Firmware,
    tpm: Swtpm,
    extra_args: Vec<String>,
}

/// Copies `from` to `to` leaving holes where `from` has blocks of zeros: the disk image is
/// mostly an empty data partition, and every appliance gets its own copy.
fn sparse_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut input = fs::File::open(from)?;
    let mut output = fs::File::create(to)?;
    let mut block = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let mut filled = 0;
        while filled < block.len() {
            match input.read(&mut block[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        if block[..filled].iter().all(|b| *b == 0) {
            output.seek(SeekFrom::Current(filled as i64))?;
        } else {
            output.write_all(&block[..filled])?;
        }
        len += filled as u64;
    }
    output.set_len(len)?;
    output.sync_all()
}

impl Appliance {
    /// A fresh appliance with a copy of `disk`, Secure Boot on with the project's keys, and a
    /// freshly provisioned TPM (EK certificate from a CA in the TPM's own temp dir).
    pub fn new(disk: &Path) -> Result<Self, GuestError> {
        Self::with_firmware(disk, Firmware::SecureBoot)
    }

    /// Like [`Appliance::new`], with the given firmware.
    pub fn with_firmware(disk: &Path, firmware: Firmware) -> Result<Self, GuestError> {
        let dir = tempfile::Builder::new()
            .prefix("sovereign-appliance-")
            .tempdir()
            .map_err(|e| GuestError::Io(format!("temp dir: {e}")))?;
        let copy = dir.path().join("disk.raw");
        sparse_copy(disk, &copy).map_err(|e| GuestError::Io(format!("copying {}: {e}", disk.display())))?;
        let vars = dir.path().join("OVMF_VARS.fd");
        let mut appliance =
            Appliance { dir, disk: copy, vars, firmware, tpm: Swtpm::start_for_qemu()?, extra_args: Vec::new() };
        appliance.set_firmware(firmware)?;
        Ok(appliance)
    }

    /// Switches the firmware for the next boots, with a fresh copy of its variable store (as
    /// clearing the NVRAM would); the disk and the TPM are kept.
    pub fn set_firmware(&mut self, firmware: Firmware) -> Result<(), GuestError> {
        let template = firmware.vars_template();
        fs::copy(template, &self.vars)
            .map_err(|e| GuestError::Io(format!("copying {template} (install ovmf): {e}")))?;
        self.firmware = firmware;
        Ok(())
    }

    /// The firmware the next boot uses.
    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// The host end of the appliance's control port (a unix socket while a guest runs).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// The certificates of the CA that issued this appliance's EK certificate (PEM): what an
    /// operator pins as the TPM manufacturer's root.
    pub fn ek_ca_pem(&self) -> Result<String, GuestError> {
        Ok(self.tpm.ca_certificates_pem()?)
    }

    /// Extra QEMU arguments for the next boots: a changed platform (e.g. a second disk the
    /// firmware may boot from) that firmware measures, for tests of attestation against the
    /// platform profile.
    pub fn set_extra_qemu_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Adds QEMU arguments for the next boots (after any set before), e.g. a NIC on a
    /// [`crate::hub::Hub`].
    pub fn add_qemu_args(&mut self, args: impl IntoIterator<Item = String>) {
        self.extra_args.extend(args);
    }

    /// The appliance's disk image (to tamper with between boots in tests).
    pub fn disk(&self) -> &Path {
        &self.disk
    }

    /// Replaces the ESP + everything else of the disk with another image but keeps the byte
    /// ranges in `keep` (as an update would keep the state partition's key area and the data
    /// partition): copies every byte of `disk` outside them.
    pub fn replace_disk_keeping(&self, disk: &Path, keep: &[std::ops::Range<u64>]) -> Result<(), GuestError> {
        let mut new = fs::read(disk).map_err(|e| GuestError::Io(format!("reading {}: {e}", disk.display())))?;
        let old = fs::read(&self.disk).map_err(|e| GuestError::Io(format!("reading {}: {e}", self.disk.display())))?;
        for range in keep {
            let (a, b) = (range.start as usize, range.end as usize);
            if b > new.len() || b > old.len() {
                return Err(GuestError::Io("kept range outside the disk".into()));
            }
            new[a..b].copy_from_slice(&old[a..b]);
        }
        fs::write(&self.disk, new).map_err(|e| GuestError::Io(format!("writing {}: {e}", self.disk.display())))
    }

    /// Copies the disk as it is now to `to` (sparse): an older copy to put back later with
    /// [`Appliance::restore_disk`]. Call it with the appliance off.
    pub fn save_disk(&self, to: &Path) -> Result<(), GuestError> {
        sparse_copy(&self.disk, to).map_err(|e| GuestError::Io(format!("copying {}: {e}", self.disk.display())))
    }

    /// Puts a disk saved with [`Appliance::save_disk`] back (the TPM keeps its state).
    pub fn restore_disk(&self, from: &Path) -> Result<(), GuestError> {
        sparse_copy(from, &self.disk).map_err(|e| GuestError::Io(format!("restoring {}: {e}", from.display())))
    }

    /// Runs `f` with the appliance's TPM reachable from the host (its TCTI string) while the
    /// appliance is off: factory provisioning. See [`Swtpm::on_host`].
    pub fn tpm_on_host<T>(&mut self, f: impl FnOnce(&str) -> T) -> Result<T, GuestError> {
        Ok(self.tpm.on_host(f)?)
    }

    /// Boots the appliance. The TPM is power-cycled first (PCRs reset, NV kept), as a real
    /// machine's would be.
    pub fn boot(&mut self, timeout: Duration) -> Result<Guest, GuestError> {
        self.tpm.power_cycle()?;
        let qmp = self.dir.path().join("qmp.sock");
        let _ = fs::remove_file(&qmp);
        let _ = fs::remove_file(self.control_socket());
        let accel = std::env::var("SOVEREIGN_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-machine", if self.firmware == Firmware::SecureBoot { "q35,smm=on" } else { "q35" }])
            // Secure Boot's variables are writable only from SMM: the pflash answers only there.
            .args(if self.firmware == Firmware::SecureBoot {
                &["-global", "driver=cfi.pflash01,property=secure,value=on"][..]
            } else {
                &[][..]
            })
            // Two vCPUs (each a host thread under TCG): PID 1 hashes the initramfs on both.
            .args([
                "-accel",
                &accel,
                "-cpu",
                "max",
                "-smp",
                "2",
                "-m",
                "1024",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-serial", "stdio"])
            // The hardware watchdog PID 1 arms on a trial boot: when it fires, the machine
            // resets (and, with -no-reboot, QEMU exits as for any reboot).
            .args(["-device", "i6300esb", "-action", "watchdog=reset"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={}", self.firmware.code()))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", self.vars.display()))
            // The disk is the only boot device the firmware is told of (bootindex): OVMF then
            // prunes every other boot option (a NIC's HTTP boot entries, which name its MAC and
            // would be measured into PCR 1). Index 1: QEMU gives 0 to `-kernel` when a test uses it.
            .arg("-drive")
            .arg(format!("file={},format=raw,if=none,id=disk0", self.disk.display()))
            .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"])
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", self.tpm.qemu_socket().display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            // The control API: a virtio-serial port whose host side is a unix socket.
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("socket,id=control,path={},server=on,wait=off", self.control_socket().display()))
            .args(["-device", "virtserialport,chardev=control,name=sovereign.control"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| GuestError::Qemu(e.to_string()))?;
        let console = Arc::new(Mutex::new(String::new()));
        let log_path = self.dir.path().join(format!("serial-{}.log", std::process::id()));
        let stdout = child.stdout.take().ok_or_else(|| GuestError::Qemu("no stdout".into()))?;
        let sink = Arc::clone(&console);
        let stream = std::env::var_os("SOVEREIGN_SERIAL").is_some();
        let reader = std::thread::spawn(move || {
            let mut log = fs::File::create(&log_path).ok();
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
                let text = String::from_utf8_lossy(&line).into_owned();
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(text.as_bytes());
                }
                if stream {
                    eprint!("[guest] {text}");
                }
                if let Ok(mut c) = sink.lock() {
                    c.push_str(&text);
                }
                line.clear();
            }
        });
        Ok(Guest { child: Some(child), console, qmp, started: Instant::now(), timeout, reader: Some(reader) })
    }
}

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    child: Option<Child>,
    console: Arc<Mutex<String>>,
    qmp: PathBuf,
    started: Instant,
    timeout: Duration,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Guest {
    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.console.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Waits until a console line contains `needle`; returns that line.
    pub fn wait_for(&mut self, needle: &str) -> Result<String, GuestError> {
        loop {
            let console = self.console();
            if let Some(line) = console.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || self.started.elapsed() > self.timeout {
                std::thread::sleep(Duration::from_millis(200));
                let console = self.console();
                if let Some(line) = console.lines().find(|l| l.contains(needle)) {
                    return Ok(line.to_string());
                }
                let tail: Vec<&str> = console.lines().rev().take(40).collect();
                let console = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                let seconds = self.started.elapsed().as_secs();
                return Err(match exited {
                    Some(status) => {
                        let mut stderr = String::new();
                        if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                            let _ = e.read_to_string(&mut stderr);
                        }
                        GuestError::Exited {
                            needle: needle.into(),
                            status: status.to_string(),
                            seconds,
                            stderr,
                            console,
                        }
                    }
                    None => GuestError::Timeout { needle: needle.into(), seconds, console },
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether QEMU has exited (the guest powered off or crashed), or the timeout passed.
    pub fn finished(&mut self) -> bool {
        self.started.elapsed() > self.timeout || self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn powerdown(&self) -> Result<(), GuestError> {
        self.qmp("{\"execute\":\"system_powerdown\"}")
    }

    /// Presses Ctrl-Alt-Del on the guest's PS/2 keyboard (QMP `send-key`).
    pub fn ctrl_alt_del(&self) -> Result<(), GuestError> {
        self.qmp(
            r#"{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}"#,
        )
    }

    /// Runs one QMP command (after the capabilities handshake); an `error` reply is an error.
    fn qmp(&self, command: &str) -> Result<(), GuestError> {
        let mut s = UnixStream::connect(&self.qmp)
            .map_err(|e| GuestError::Qmp(format!("connecting {}: {e}", self.qmp.display())))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| GuestError::Qmp(e.to_string()))?;
        let mut r = BufReader::new(s.try_clone().map_err(|e| GuestError::Qmp(e.to_string()))?);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| GuestError::Qmp(format!("greeting: {e}")))?;
        for cmd in ["{\"execute\":\"qmp_capabilities\"}", command] {
            s.write_all(format!("{cmd}\n").as_bytes()).map_err(|e| GuestError::Qmp(e.to_string()))?;
            line.clear();
            r.read_line(&mut line).map_err(|e| GuestError::Qmp(e.to_string()))?;
            if line.contains("\"error\"") {
                return Err(GuestError::Qmp(line.trim().to_string()));
            }
        }
        Ok(())
    }

    /// Waits for QEMU to exit (the guest powered off); kills it at the timeout.
    pub fn wait_exit(&mut self) -> Result<ExitStatus, GuestError> {
        let Some(child) = self.child.as_mut() else { return Err(GuestError::Qemu("already reaped".into())) };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                self.child = None;
                return Ok(status);
            }
            if self.started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(GuestError::Timeout {
                    needle: "power off".into(),
                    seconds: self.timeout.as_secs(),
                    console: self.console(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
