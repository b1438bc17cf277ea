//! The seccomp filter bubblewrap installs before it runs a sandboxed
//! command: a classic BPF program, assembled here, that makes the system
//! calls a test run never needs fail with EPERM — tracing other processes,
//! mounting, kernel modules, the keyring, kexec, reboot, swap, eBPF, perf,
//! userfaultfd, file handles and new namespaces (unshare, setns, and clone
//! with a `CLONE_NEW*` flag). `clone3` answers ENOSYS, because its flags sit
//! behind a pointer the filter cannot read; the C library then falls back
//! to `clone`, whose flags it can. System calls of a foreign ABI (i386 or
//! x32 on x86_64) are refused outright, so nobody reaches a blocked call
//! through another number. Built for x86_64 and aarch64; elsewhere
//! [`program`] fails closed.

use crate::SandboxError;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
pub(crate) const RET_EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
pub(crate) const RET_ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of the first argument (both supported ABIs are little-endian).
const OFF_ARG0_LO: u32 = 16;

/// The namespace flags `clone` must not carry. `CLONE_NEWTIME` (0x80) is
/// left out: for `clone` those bits are the exit signal, and the kernel
/// only accepts that flag from `clone3` and `unshare`, both refused anyway.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// What the filter needs to know about one ABI.
#[derive(Debug, Clone)]
pub(crate) struct Abi {
    /// `AUDIT_ARCH_*` value the kernel reports for this ABI.
    pub audit_arch: u32,
    /// Syscall numbers at or above this belong to another ABI sharing the
    /// architecture value (x32 on x86_64).
    pub foreign_from: Option<u32>,
    pub blocked: Vec<(&'static str, u32)>,
    pub clone: u32,
    pub clone3: u32,
}

/// `[(name, number)]` for `libc::SYS_*` constants, names without `SYS_`.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        vec![$((stringify!($sys).trim_start_matches("SYS_"), libc::$sys as u32)),*]
    };
}

/// The native ABI of this build, or why there is none.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) fn native_abi() -> Result<Abi, String> {
    #[cfg(target_arch = "x86_64")]
    let (audit_arch, foreign_from) = (0xC000_003E_u32, Some(0x4000_0000_u32));
    #[cfg(target_arch = "aarch64")]
    let (audit_arch, foreign_from) = (0xC000_00B7_u32, None);
    Ok(Abi {
        audit_arch,
        foreign_from,
        blocked: syscalls![
            SYS_ptrace,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_open_tree,
            SYS_move_mount,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_mount_setattr,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_add_key,
            SYS_request_key,
            SYS_keyctl,
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_reboot,
            SYS_swapon,
            SYS_swapoff,
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_open_by_handle_at,
            SYS_unshare,
            SYS_setns,
        ],
        clone: libc::SYS_clone as u32,
        clone3: libc::SYS_clone3 as u32,
    })
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub(crate) fn native_abi() -> Result<Abi, String> {
    Err(format!(
        "the bubblewrap sandbox's seccomp filter is only built for x86_64 and aarch64 Linux, \
         and this orch was built for {}-{}: use sandbox = \"docker\", or sandbox = \"none\" to \
         run without isolation",
        std::env::consts::ARCH,
        std::env::consts::OS
    ))
}

/// Assembles the filter for `abi`.
pub(crate) fn assemble(abi: &Abi) -> Vec<Insn> {
    let ld = |k| Insn {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k,
    };
    let ret = |k| Insn {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    };
    // "if A == k (or A >= k, A & k) then fall through to the next
    // instruction, else skip it": every test guards one return.
    let guard = |code, k| Insn {
        code,
        jt: 0,
        jf: 1,
        k,
    };
    let mut p = vec![
        ld(OFF_ARCH),
        Insn {
            code: BPF_JEQ_K,
            jt: 1,
            jf: 0,
            k: abi.audit_arch,
        },
        ret(RET_EPERM),
        ld(OFF_NR),
    ];
    if let Some(from) = abi.foreign_from {
        p.extend([guard(BPF_JGE_K, from), ret(RET_EPERM)]);
    }
    for &(_, nr) in &abi.blocked {
        p.extend([guard(BPF_JEQ_K, nr), ret(RET_EPERM)]);
    }
    p.extend([guard(BPF_JEQ_K, abi.clone3), ret(RET_ENOSYS)]);
    p.extend([
        Insn {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 3,
            k: abi.clone,
        },
        ld(OFF_ARG0_LO),
        guard(BPF_JSET_K, CLONE_NS_FLAGS),
        ret(RET_EPERM),
        ret(RET_ALLOW),
    ]);
    p
}

/// The program as bubblewrap reads it from `--seccomp FD`: the raw
/// `struct sock_filter` array in native byte order.
fn to_bytes(program: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// The filter for this machine, assembled once.
pub fn program() -> Result<&'static [u8], SandboxError> {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| native_abi().map(|abi| to_bytes(&assemble(&abi))))
        .as_deref()
        .map_err(|e| SandboxError::Unavailable(e.clone()))
}

/// Names of the system calls the filter refuses with EPERM.
pub fn blocked_syscalls() -> Vec<&'static str> {
    native_abi()
        .map(|abi| abi.blocked.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default()
}

/// A pipe whose read end holds the filter, for `bwrap --seccomp FD`. The
/// read end is close-on-exec, so only the child that clears the flag (see
/// `bwrap.rs`) inherits it; a fresh pipe per command keeps concurrent
/// commands from sharing a read offset.
pub(crate) fn filter_pipe() -> Result<OwnedFd, SandboxError> {
    let program = program()?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Backend(format!(
            "cannot create a pipe for the seccomp filter: {} (too many open files? raise \
             `ulimit -n`)",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The program is far smaller than a pipe's buffer: this never blocks.
    std::fs::File::from(write).write_all(program).map_err(|e| {
        SandboxError::Backend(format!("cannot write the seccomp filter to its pipe: {e}"))
    })?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the few instructions the filter uses.
    fn eval(program: &[Insn], arch: u32, nr: u32, arg0: u64) -> u32 {
        let load = |off: u32| match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            OFF_ARG0_LO => arg0 as u32,
            other => panic!("unexpected load at {other}"),
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            let taken = match i.code {
                BPF_LD_W_ABS => {
                    a = load(i.k);
                    continue;
                }
                BPF_RET_K => return i.k,
                BPF_JEQ_K => a == i.k,
                BPF_JGE_K => a >= i.k,
                BPF_JSET_K => a & i.k != 0,
                other => panic!("unexpected opcode {other:#x}"),
            };
            pc += usize::from(if taken { i.jt } else { i.jf });
        }
    }

    fn abi() -> Abi {
        native_abi().unwrap()
    }

    #[test]
    fn blocks_the_listed_calls_and_allows_the_rest() {
        let abi = abi();
        let p = assemble(&abi);
        for &(name, nr) in &abi.blocked {
            assert_eq!(eval(&p, abi.audit_arch, nr, 0), RET_EPERM, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_openat,
            libc::SYS_wait4,
            libc::SYS_exit_group,
        ] {
            assert_eq!(eval(&p, abi.audit_arch, nr as u32, 0), RET_ALLOW, "{nr}");
        }
        let names = blocked_syscalls();
        for must in [
            "ptrace",
            "mount",
            "init_module",
            "keyctl",
            "unshare",
            "setns",
        ] {
            assert!(names.contains(&must), "{must} missing from {names:?}");
        }
    }

    #[test]
    fn clone_is_refused_only_with_namespace_flags() {
        let abi = abi();
        let p = assemble(&abi);
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(eval(&p, abi.audit_arch, abi.clone, fork_flags), RET_ALLOW);
        assert_eq!(eval(&p, abi.audit_arch, abi.clone, thread_flags), RET_ALLOW);
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = fork_flags | ns as u64;
            assert_eq!(
                eval(&p, abi.audit_arch, abi.clone, flags),
                RET_EPERM,
                "{ns:#x}"
            );
        }
        assert_eq!(eval(&p, abi.audit_arch, abi.clone3, 0), RET_ENOSYS);
    }

    #[test]
    fn foreign_abis_are_refused() {
        let abi = abi();
        let p = assemble(&abi);
        // i386 (on x86_64) and arm (on aarch64) report another arch value.
        for foreign in [0x4000_0003_u32, 0x4000_0028] {
            assert_eq!(eval(&p, foreign, libc::SYS_read as u32, 0), RET_EPERM);
        }
        if let Some(from) = abi.foreign_from {
            assert_eq!(eval(&p, abi.audit_arch, from, 0), RET_EPERM);
            assert_eq!(eval(&p, abi.audit_arch, from | 101, 0), RET_EPERM);
        }
    }

    #[test]
    fn serializes_as_sock_filter_array() {
        let bytes = program().unwrap();
        let p = assemble(&abi());
        assert_eq!(bytes.len(), p.len() * 8);
        assert_eq!(
            u16::from_ne_bytes([bytes[0], bytes[1]]),
            BPF_LD_W_ABS,
            "first instruction loads the arch"
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[4..8].try_into().unwrap()),
            OFF_ARCH
        );
        // Jump offsets are 8 bits: every jump in the program stays in range.
        assert!(p.len() < 256);
    }

    #[test]
    fn filter_pipe_holds_the_program_and_closes_on_exec() {
        use std::io::Read;
        let fd = filter_pipe().unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut got = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut got).unwrap();
        assert_eq!(got, program().unwrap());
    }
}
