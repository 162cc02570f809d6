//! `sovereign-confine`: the confinement the governance runtime runs under, and the means to
//! read back what the kernel enforces.
//!
//! The runtime parses untrusted input (postcard, YAML, CozoDB programs, WASM); if it is ever
//! compromised, the kernel — not the runtime's goodwill — must keep it from running anything,
//! changing a mount, loading code into the kernel or gaining a privilege. Three layers:
//!
//! 1. PID 1 starts it as [`RUNTIME_UID`]/[`RUNTIME_GID`] with no supplementary groups (the kernel
//!    clears every capability on that change), after dropping the whole capability bounding set
//!    ([`drop_bounding_set`]) and setting `no_new_privs` on itself ([`set_no_new_privs`]), both
//!    inherited, so no exec could ever give a capability back.
//! 2. The runtime, before it reads a byte of input, installs its seccomp filters on every thread
//!    ([`confine_self`]): an allow-list ([`seccomp::ALLOWED`]; anything else fails with `EPERM`)
//!    and, stacked on it, a kill-list ([`seccomp::FORBIDDEN`]: `execve`, `mount`, `ptrace`,
//!    module loading, `kexec`, `bpf`, `reboot`, the `setuid` family, …) whose calls kill the
//!    whole process with `SIGSYS` — PID 1 sees and logs that.
//! 3. Kernel lockdown (`lockdown=integrity` on the signed command line).
//!
//! And a panic anywhere ends the whole process ([`abort_on_panic`]): no thread dies alone and
//! leaves the rest serving with state it had half changed.
//!
//! [`read`] parses `/proc/self/status` and `/sys/kernel/security/lockdown` into the protocol's
//! [`Confinement`]; [`Confinement::shortfalls`] names every way it falls short, and the runtime
//! refuses to start while any remains.
//!
//! Must never: loosen a filter once installed (seccomp cannot), allow a call on the kill-list,
//! or report a confinement it did not read from the kernel.

#![forbid(unsafe_code)]

pub mod seccomp;
pub mod status;

pub use sovereign_protocol::Confinement;
pub use status::{parse_status, read};

/// The runtime's user ID: no name, no home, owns nothing but the devices and files PID 1 gives
/// it (the TPM resource manager, the control port, the data partition).
pub const RUNTIME_UID: u32 = 990;
/// The runtime's group ID.
pub const RUNTIME_GID: u32 = 990;

/// Why confinement could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// The seccomp filter could not be compiled for this architecture.
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
    /// The kernel refused to install a filter.
    #[error("installing the seccomp filter: {0}")]
    Install(String),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(rustix::io::Errno),
    /// Dropping a capability from the bounding set failed.
    #[error("dropping capability {cap} from the bounding set: {errno}")]
    BoundingSet {
        /// The capability number.
        cap: u32,
        /// Why.
        errno: rustix::io::Errno,
    },
}

/// Makes every panic, on any thread, abort the process after the default hook has printed it:
/// what `panic = "abort"` did before the release profile had to unwind (tests and benchmarks
/// share that build). PID 1 and the runtime call this first thing.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// Sets `no_new_privs` on the calling thread (inherited by every child, kept across `execve`):
/// no exec can ever grant a privilege again (setuid bits and file capabilities are ignored).
pub fn set_no_new_privs() -> Result<(), ConfineError> {
    rustix::thread::set_no_new_privs(true).map_err(ConfineError::NoNewPrivs)
}

/// Drops every capability from the calling thread's bounding set; returns how many were
/// dropped. The caller keeps the capabilities it holds (PID 1 still needs some to shut down),
/// but no program it starts can gain any of them. Needs `CAP_SETPCAP`.
pub fn drop_bounding_set() -> Result<u32, ConfineError> {
    let mut dropped = 0;
    for cap in 0..64u32 {
        let set = rustix::thread::CapabilitySet::from_bits_retain(1u64 << cap);
        match rustix::thread::capability_is_in_bounding_set(set) {
            Ok(false) => continue,
            Ok(true) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(errno) => return Err(ConfineError::BoundingSet { cap, errno }),
        }
        rustix::thread::remove_capability_from_bounding_set(set)
            .map_err(|errno| ConfineError::BoundingSet { cap, errno })?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Confines the calling process for good: `no_new_privs`, then the seccomp allow-list and
/// kill-list on every thread. Call it first thing in `main`, before any input is read.
pub fn confine_self() -> Result<(), ConfineError> {
    set_no_new_privs()?;
    seccomp::install()
}
