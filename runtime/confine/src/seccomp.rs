//! The runtime's seccomp filters (x86_64): an allow-list whose misses fail with `EPERM`, and a
//! kill-list stacked on it whose calls kill the process (`SECCOMP_RET_KILL_PROCESS`, `SIGSYS`).
//! The kernel runs every stacked filter and the strictest answer wins, so a call on both lists
//! still kills. Installed with `TSYNC` on every thread of the process.
//!
//! The allow-list is what the runtime's own work needs: files on the data partition, memory
//! (wasmtime maps and protects JIT code), threads and their synchronisation (rayon, the epoch
//! ticker), signals for wasmtime's traps and PID 1's SIGTERM, the TPM and the control port
//! (read/write/ioctl/poll on the two devices PID 1 gave it), clocks and randomness, and the
//! mesh's TCP sockets: `socket` only for TCP over IPv4 and IPv6 (no UDP, no netlink, no packet
//! or unix sockets: the runtime cannot change or sniff the network, open another kind of port,
//! nor reach PID 1 through a socket).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::ConfineError;

/// System calls that kill the runtime: running a program, changing what is mounted, reaching
/// into another process, loading code into the kernel, rebooting, changing identity or
/// capabilities, new namespaces, and the kernel interfaces an attacker reaches for first.
#[cfg(target_arch = "x86_64")]
pub const FORBIDDEN: &[(&str, i64)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("reboot", libc::SYS_reboot),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("setresuid", libc::SYS_setresuid),
    ("setresgid", libc::SYS_setresgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setfsgid", libc::SYS_setfsgid),
    ("setgroups", libc::SYS_setgroups),
    ("capset", libc::SYS_capset),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
];

/// System calls the runtime may make; any other fails with `EPERM`.
#[cfg(target_arch = "x86_64")]
pub const ALLOWED: &[(&str, i64)] = &[
    // Files (the data partition, its own configuration, /proc, the two devices).
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("open", libc::SYS_open),
    ("openat", libc::SYS_openat),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("lseek", libc::SYS_lseek),
    ("stat", libc::SYS_stat),
    ("fstat", libc::SYS_fstat),
    ("lstat", libc::SYS_lstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("statfs", libc::SYS_statfs),
    ("fstatfs", libc::SYS_fstatfs),
    ("access", libc::SYS_access),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("getdents64", libc::SYS_getdents64),
    ("getcwd", libc::SYS_getcwd),
    ("fcntl", libc::SYS_fcntl),
    ("flock", libc::SYS_flock),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("ftruncate", libc::SYS_ftruncate),
    ("fallocate", libc::SYS_fallocate),
    ("fadvise64", libc::SYS_fadvise64),
    ("rename", libc::SYS_rename),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("link", libc::SYS_link),
    ("linkat", libc::SYS_linkat),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("rmdir", libc::SYS_rmdir),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("umask", libc::SYS_umask),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("sendfile", libc::SYS_sendfile),
    ("ioctl", libc::SYS_ioctl),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("pipe", libc::SYS_pipe),
    ("pipe2", libc::SYS_pipe2),
    // Waiting on descriptors.
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("select", libc::SYS_select),
    ("pselect6", libc::SYS_pselect6),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("eventfd2", libc::SYS_eventfd2),
    // Memory (wasmtime maps, protects and resets linear memories and JIT code).
    ("brk", libc::SYS_brk),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mremap", libc::SYS_mremap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    ("msync", libc::SYS_msync),
    ("mincore", libc::SYS_mincore),
    ("memfd_create", libc::SYS_memfd_create),
    ("membarrier", libc::SYS_membarrier),
    // Threads and their synchronisation.
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("futex", libc::SYS_futex),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("rseq", libc::SYS_rseq),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("prctl", libc::SYS_prctl),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    // Signals (wasmtime's trap handlers, PID 1's SIGTERM, aborting).
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("tgkill", libc::SYS_tgkill),
    ("restart_syscall", libc::SYS_restart_syscall),
    // Identity and limits, read only.
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("getppid", libc::SYS_getppid),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
    ("getgroups", libc::SYS_getgroups),
    ("getresuid", libc::SYS_getresuid),
    ("getresgid", libc::SYS_getresgid),
    ("uname", libc::SYS_uname),
    ("sysinfo", libc::SYS_sysinfo),
    ("getrusage", libc::SYS_getrusage),
    ("getrlimit", libc::SYS_getrlimit),
    ("prlimit64", libc::SYS_prlimit64),
    // The mesh's TCP connections (socket itself is checked by family and type in `program`).
    ("socket", libc::SYS_socket),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept4", libc::SYS_accept4),
    ("connect", libc::SYS_connect),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockopt", libc::SYS_getsockopt),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    // Time and randomness.
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("time", libc::SYS_time),
    ("getrandom", libc::SYS_getrandom),
];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;

fn program(
    calls: &[(&str, i64)],
    on_match: SeccompAction,
    otherwise: SeccompAction,
) -> Result<BpfProgram, ConfineError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = calls.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    // An allowed `socket` is allowed for TCP over the internet families only.
    if on_match == SeccompAction::Allow
        && let Some(socket) = rules.get_mut(&libc::SYS_socket)
    {
        for family in [libc::AF_INET, libc::AF_INET6] {
            let only = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64)
                .and_then(|f| {
                    // TCP only: the type's low bits (the flags above them may vary).
                    let stream = SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(0xf),
                        libc::SOCK_STREAM as u64,
                    )?;
                    SeccompRule::new(vec![f, stream])
                })
                .map_err(|e| ConfineError::Compile(e.to_string()))?;
            socket.push(only);
        }
    }
    let filter =
        SeccompFilter::new(rules, otherwise, on_match, ARCH).map_err(|e| ConfineError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| ConfineError::Compile(e.to_string()))
}

/// The two programs in installation order: the kill-list first, because once the allow-list
/// is in force `seccomp(2)` itself is refused (no filter can be added after it).
#[cfg(target_arch = "x86_64")]
pub fn programs() -> Result<[BpfProgram; 2], ConfineError> {
    Ok([
        program(FORBIDDEN, SeccompAction::KillProcess, SeccompAction::Allow)?,
        program(ALLOWED, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32))?,
    ])
}

/// Installs both filters on every thread of the calling process. Requires `no_new_privs`
/// (or `CAP_SYS_ADMIN`); irreversible.
#[cfg(target_arch = "x86_64")]
pub fn install() -> Result<(), ConfineError> {
    for program in programs()? {
        seccompiler::apply_filter_all_threads(&program).map_err(|e| ConfineError::Install(e.to_string()))?;
    }
    Ok(())
}

/// No filter is written for this architecture: confinement fails closed.
#[cfg(not(target_arch = "x86_64"))]
pub fn install() -> Result<(), ConfineError> {
    Err(ConfineError::Compile(format!("no seccomp filter for {}", std::env::consts::ARCH)))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::{ALLOWED, FORBIDDEN, programs};

    #[test]
    fn no_call_is_both_allowed_and_forbidden_and_the_required_ones_are_forbidden() {
        for (name, nr) in FORBIDDEN {
            assert!(!ALLOWED.iter().any(|(_, a)| a == nr), "{name} is on both lists");
        }
        for required in [
            "execve",
            "execveat",
            "mount",
            "umount2",
            "ptrace",
            "kexec_load",
            "init_module",
            "finit_module",
            "bpf",
            "reboot",
            "setuid",
            "setgid",
            "setresuid",
            "setgroups",
        ] {
            assert!(FORBIDDEN.iter().any(|(n, _)| *n == required), "{required} is not forbidden");
        }
        assert!(programs().is_ok());
    }
}
