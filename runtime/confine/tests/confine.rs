//! The confinement function on a real child process: after `confine_self`, `execve`, `mount`
//! and `ptrace` kill the process with SIGSYS, a call off the allow-list fails with EPERM, and
//! the runtime's ordinary work (files, threads) still runs. The same child without
//! confinement execs, so the test fails if the filter stops biting.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(target_arch = "x86_64")]

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus};

const CHILD: &str = "SOVEREIGN_CONFINE_CHILD";
const SIGSYS: i32 = 31;

/// The child's side: runs only when the parent test re-executes this binary with [`CHILD`] set.
#[test]
fn child_entry() {
    let Ok(what) = std::env::var(CHILD) else { return };
    let confined = !what.starts_with("unconfined-");
    if confined {
        sovereign_confine::confine_self().unwrap();
        let status = sovereign_confine::read().unwrap();
        assert!(status.no_new_privs && status.seccomp_mode == 2, "{status:?}");
    }
    match what.trim_start_matches("unconfined-") {
        "execve" => {
            let _ = nix::unistd::execv(c"/bin/true", &[c"/bin/true"]);
            std::process::exit(3)
        }
        "mount" => {
            let _ = nix::mount::mount(
                Some("tmpfs"),
                "/nonexistent-mount-point",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
            std::process::exit(3)
        }
        "ptrace" => {
            let _ = nix::sys::ptrace::attach(nix::unistd::getppid());
            std::process::exit(3)
        }
        "off-the-list" => {
            // sethostname is on neither list: it fails with EPERM, the process lives on.
            let errno = nix::unistd::sethostname("confined").unwrap_err();
            assert_eq!(errno, nix::errno::Errno::EPERM);
            std::process::exit(0)
        }
        "sockets" => {
            // The mesh's TCP works; UDP, raw, netlink, packet and unix sockets are refused with EPERM.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).map(|_| ()));
            listener.accept().unwrap();
            client.join().unwrap().unwrap();
            use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
            for (family, kind, protocol) in [
                (AddressFamily::Netlink, SockType::Raw, Some(SockProtocol::NetlinkRoute)),
                (AddressFamily::Packet, SockType::Raw, None),
                (AddressFamily::Unix, SockType::Stream, None),
                (AddressFamily::Inet, SockType::Datagram, None),
                (AddressFamily::Inet6, SockType::Datagram, None),
                (AddressFamily::Inet, SockType::Raw, Some(SockProtocol::Icmp)),
            ] {
                let errno = socket(family, kind, SockFlag::empty(), protocol).unwrap_err();
                assert_eq!(errno, nix::errno::Errno::EPERM, "socket({family:?}, {kind:?}) was not refused with EPERM");
            }
            std::process::exit(0)
        }
        "ordinary-work" => {
            let dir = std::env::temp_dir().join(format!("sovereign-confine-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("a"), b"artifact").unwrap();
            std::fs::File::open(dir.join("a")).unwrap().sync_all().unwrap();
            std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
            let read = std::thread::spawn(move || std::fs::read(dir.join("b")).unwrap()).join().unwrap();
            assert_eq!(read, b"artifact");
            std::process::exit(0)
        }
        other => panic!("unknown child action {other}"),
    }
}

fn child(what: &str) -> ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD, what)
        .status()
        .unwrap()
}

#[test]
fn execve_mount_and_ptrace_kill_the_confined_process() {
    for what in ["execve", "mount", "ptrace"] {
        let status = child(what);
        assert_eq!(status.signal(), Some(SIGSYS), "{what}: the confined child ended with {status:?}, not SIGSYS");
    }
}

#[test]
fn calls_off_the_allow_list_fail_and_ordinary_work_runs() {
    for what in ["off-the-list", "ordinary-work", "sockets"] {
        let status = child(what);
        assert!(status.success(), "{what}: {status:?}");
    }
}

#[test]
fn without_confinement_the_same_child_execs() {
    // /bin/true replaces the child and exits 0; had execv failed the child would exit 3.
    let status = child("unconfined-execve");
    assert!(status.success(), "unconfined execve: {status:?}");
}
