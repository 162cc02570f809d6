//! Stopping the runtime and reaping every process before the data partition is unmounted:
//! nothing may still hold a file open on it (or be a zombie) when PID 1 syncs, unmounts and
//! powers off.
//!
//! IO edge (signals and `waitpid`); used by PID 1 and tested on the host against real child
//! processes. Must never: return from [`stop`] while the process may still run, or report every
//! process reaped while a child remains.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited (or died of a signal) within the grace period after SIGTERM.
    Exited,
    /// It ignored SIGTERM for the whole grace period and was killed with SIGKILL.
    Killed,
}

/// Sends SIGTERM to `pid` (a child of the caller), waits up to `grace` for it to end, then
/// SIGKILLs it; returns only once it has been reaped.
pub fn stop(pid: Pid, grace: Duration) -> Result<Stopped, String> {
    match kill(pid, Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(format!("SIGTERM to {pid}: {e}")),
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => return Ok(Stopped::Exited),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {pid}: {e}")),
        }
    }
    kill(pid, Signal::SIGKILL).map_err(|e| format!("SIGKILL to {pid}: {e}"))?;
    // SIGKILL cannot be caught: this wait ends.
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => return Ok(Stopped::Killed),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("reaping {pid}: {e}")),
        }
    }
}

/// Reaps children until none remains (`ECHILD`); returns how many it reaped, or an error
/// naming how many were still running at `timeout`.
pub fn reap_all(timeout: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + timeout;
    let mut reaped = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return Ok(reaped),
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    return Err(format!("children still running after {timeout:?} ({reaped} reaped)"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => reaped += 1,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}
