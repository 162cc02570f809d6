//! PID 1's stop-and-reap against real child processes: one that honours SIGTERM, one that
//! ignores it (killed after the grace period), and every child reaped before `reap_all`
//! returns — no zombie is left holding the data partition.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use sovereign_init::shutdown::{Stopped, reap_all, stop};

/// Spawns a child whose reaping is the code under test's job (`waitpid` by PID), not `Child`'s.
#[allow(clippy::zombie_processes)]
fn spawn(script: &str) -> Pid {
    let child = Command::new("sh").args(["-c", script]).spawn().unwrap();
    Pid::from_raw(child.id() as i32)
}

#[test]
fn children_are_stopped_killed_after_the_grace_period_and_all_reaped() {
    let polite = spawn("exec sleep 60");
    let started = Instant::now();
    assert_eq!(stop(polite, Duration::from_secs(5)).unwrap(), Stopped::Exited);
    assert!(started.elapsed() < Duration::from_secs(5), "a polite child took the whole grace period");
    assert_eq!(waitpid(polite, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD), "not reaped");

    // `trap '' TERM` makes the shell ignore SIGTERM; the loop keeps it from exec-ing away.
    let stubborn = spawn("trap '' TERM; while :; do sleep 0.05; done");
    std::thread::sleep(Duration::from_millis(200)); // let the trap be installed
    let started = Instant::now();
    assert_eq!(stop(stubborn, Duration::from_millis(500)).unwrap(), Stopped::Killed);
    assert!(started.elapsed() >= Duration::from_millis(500), "killed before the grace period ended");
    assert_eq!(waitpid(stubborn, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD), "not reaped");

    // reap_all (one test: `waitpid(-1)` would race a parallel test's children).
    for _ in 0..3 {
        spawn("exit 0");
    }
    let slow = spawn("sleep 0.3");
    let reaped = reap_all(Duration::from_secs(10)).unwrap();
    assert!(reaped >= 4, "reaped {reaped}, expected the four children");
    assert_eq!(waitpid(slow, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD));
    // A child that outlives the timeout is reported, not hidden.
    let lingering = spawn("exec sleep 60");
    let err = reap_all(Duration::from_millis(100)).unwrap_err();
    assert!(err.contains("still running"), "{err}");
    stop(lingering, Duration::from_secs(1)).unwrap();
}
