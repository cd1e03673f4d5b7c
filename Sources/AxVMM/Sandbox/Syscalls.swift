import CKVM

/// A system call by name and number; the numbers come from the target's <sys/syscall.h>, so
/// each architecture's build has its own (x86_64's table differs from the generic one arm64
/// and riscv64 share, and some calls exist on x86_64 only).
struct Syscall: Sendable {
    let name: StaticString
    let number: Int32
    init(_ name: StaticString, _ number: Int32) { self.name = name; self.number = number }
}

/// The system calls the sandbox allows some role, and others its report names by name when
/// a thread makes them (an exploit's first steps: `execve`, `socket`, `open`; calls axvm made
/// before set-up, such as `preadv` or `eventfd2`).
enum Syscalls {
    // Memory, threads, time, signals: every thread.
    static let futex = Syscall("futex", SYS_futex)
    static let exit = Syscall("exit", SYS_exit)
    static let exitGroup = Syscall("exit_group", SYS_exit_group)
    static let rtSigreturn = Syscall("rt_sigreturn", SYS_rt_sigreturn)
    static let rtSigprocmask = Syscall("rt_sigprocmask", SYS_rt_sigprocmask)
    static let rtSigaction = Syscall("rt_sigaction", SYS_rt_sigaction)
    static let sigaltstack = Syscall("sigaltstack", SYS_sigaltstack)
    static let restartSyscall = Syscall("restart_syscall", SYS_restart_syscall)
    static let mmap = Syscall("mmap", SYS_mmap)
    static let munmap = Syscall("munmap", SYS_munmap)
    static let mprotect = Syscall("mprotect", SYS_mprotect)
    static let madvise = Syscall("madvise", SYS_madvise)
    static let mremap = Syscall("mremap", SYS_mremap)
    static let brk = Syscall("brk", SYS_brk)
    static let mincore = Syscall("mincore", SYS_mincore)
    static let clockGettime = Syscall("clock_gettime", SYS_clock_gettime)
    static let clockNanosleep = Syscall("clock_nanosleep", SYS_clock_nanosleep)
    static let nanosleep = Syscall("nanosleep", SYS_nanosleep)
    static let gettid = Syscall("gettid", SYS_gettid)
    static let getpid = Syscall("getpid", SYS_getpid)
    static let tgkill = Syscall("tgkill", SYS_tgkill)
    /// musl signals a thread with tkill (pthread_kill, raise).
    static let tkill = Syscall("tkill", SYS_tkill)
    static let schedYield = Syscall("sched_yield", SYS_sched_yield)
    static let schedGetaffinity = Syscall("sched_getaffinity", SYS_sched_getaffinity)
    static let schedSetaffinity = Syscall("sched_setaffinity", SYS_sched_setaffinity)
    static let getcpu = Syscall("getcpu", SYS_getcpu)
    static let getrandom = Syscall("getrandom", SYS_getrandom)
    static let rseq = Syscall("rseq", SYS_rseq)
    static let setRobustList = Syscall("set_robust_list", SYS_set_robust_list)
    static let clone = Syscall("clone", SYS_clone)
    static let clone3 = Syscall("clone3", SYS_clone3)
    static let prctl = Syscall("prctl", SYS_prctl)
    static let capget = Syscall("capget", SYS_capget)
    static let capset = Syscall("capset", SYS_capset)
    static let seccomp = Syscall("seccomp", SYS_seccomp)
    // I/O on descriptors opened during set-up.
    static let read = Syscall("read", SYS_read)
    static let write = Syscall("write", SYS_write)
    static let readv = Syscall("readv", SYS_readv)
    static let writev = Syscall("writev", SYS_writev)
    static let pread64 = Syscall("pread64", SYS_pread64)
    static let pwrite64 = Syscall("pwrite64", SYS_pwrite64)
    static let preadv = Syscall("preadv", SYS_preadv)
    static let pwritev = Syscall("pwritev", SYS_pwritev)
    static let lseek = Syscall("lseek", SYS_lseek)
    static let close = Syscall("close", SYS_close)
    static let ppoll = Syscall("ppoll", SYS_ppoll)
    static let ioctl = Syscall("ioctl", SYS_ioctl)
    static let fstat = Syscall("fstat", SYS_fstat)
    static let newfstatat = Syscall("newfstatat", SYS_newfstatat)
    static let fallocate = Syscall("fallocate", SYS_fallocate)
    static let ftruncate = Syscall("ftruncate", SYS_ftruncate)
    static let fsync = Syscall("fsync", SYS_fsync)
    static let fdatasync = Syscall("fdatasync", SYS_fdatasync)
    static let fchmod = Syscall("fchmod", SYS_fchmod)
    static let eventfd2 = Syscall("eventfd2", SYS_eventfd2)
    // Files by name: results and snapshots only.
    static let openat = Syscall("openat", SYS_openat)
    /// musl's open(O_CLOEXEC) sets FD_CLOEXEC again with fcntl(F_SETFD) (for kernels before
    /// 2.6.23); glibc does not (`SandboxPolicy`: musl builds only).
    static let fcntl = Syscall("fcntl", SYS_fcntl)
    static let mkdirat = Syscall("mkdirat", SYS_mkdirat)
    static let renameat2 = Syscall("renameat2", SYS_renameat2)
    static let unlinkat = Syscall("unlinkat", SYS_unlinkat)
    static let faccessat = Syscall("faccessat", SYS_faccessat)
    static let readlinkat = Syscall("readlinkat", SYS_readlinkat)
    static let getdents64 = Syscall("getdents64", SYS_getdents64)
    static let umask = Syscall("umask", SYS_umask)
    static let flock = Syscall("flock", SYS_flock)
    static let statx = Syscall("statx", SYS_statx)
    static let getcwd = Syscall("getcwd", SYS_getcwd)
    /// The control socket's thread takes its connections (the socket itself is made during set-up).
    static let accept4 = Syscall("accept4", SYS_accept4)
    // Refused everywhere, named in the report.
    static let execve = Syscall("execve", SYS_execve)
    static let execveat = Syscall("execveat", SYS_execveat)
    static let socket = Syscall("socket", SYS_socket)
    static let connect = Syscall("connect", SYS_connect)
    static let bind = Syscall("bind", SYS_bind)
    static let ptrace = Syscall("ptrace", SYS_ptrace)
    static let kill = Syscall("kill", SYS_kill)
    static let mount = Syscall("mount", SYS_mount)
    static let unshare = Syscall("unshare", SYS_unshare)
    static let setuid = Syscall("setuid", SYS_setuid)
    static let memfdCreate = Syscall("memfd_create", SYS_memfd_create)
    static let processVMWritev = Syscall("process_vm_writev", SYS_process_vm_writev)
    #if arch(x86_64)
    // x86_64 also has the old calls glibc makes there for poll(), mkdir(), rename(), ….
    static let poll = Syscall("poll", SYS_poll)
    static let open = Syscall("open", SYS_open)
    static let mkdir = Syscall("mkdir", SYS_mkdir)
    static let rename = Syscall("rename", SYS_rename)
    static let renameat = Syscall("renameat", SYS_renameat)
    static let unlink = Syscall("unlink", SYS_unlink)
    static let rmdir = Syscall("rmdir", SYS_rmdir)
    static let access = Syscall("access", SYS_access)
    static let readlink = Syscall("readlink", SYS_readlink)
    static let fork = Syscall("fork", SYS_fork)
    static let vfork = Syscall("vfork", SYS_vfork)
    static let archSpecific: [Syscall] = [poll, open, mkdir, rename, renameat, unlink, rmdir, access, readlink, fork, vfork]
    #else
    // The generic table (arm64, riscv64) has none of these: glibc makes the newer calls.
    static let poll = ppoll
    static let mkdir = mkdirat
    #if arch(arm64)
    static let rename = Syscall("renameat", SYS_renameat)  // arm64 keeps renameat; riscv64 has only renameat2
    #else
    static let rename = renameat2
    #endif
    static let unlink = unlinkat
    static let rmdir = unlinkat
    static let access = faccessat
    static let readlink = readlinkat
    static let archSpecific: [Syscall] = []
    #endif

    static let all: [Syscall] = [
        futex, exit, exitGroup, rtSigreturn, rtSigprocmask, rtSigaction, sigaltstack, restartSyscall, mmap, munmap,
        mprotect, madvise, mremap, brk, mincore, clockGettime, clockNanosleep, nanosleep, gettid, getpid, tgkill, tkill,
        schedYield, schedGetaffinity, schedSetaffinity, getcpu, getrandom, rseq, setRobustList, clone, clone3, prctl,
        capget, capset, seccomp, read, write, readv, writev, pread64, pwrite64, preadv, pwritev, lseek, close, ppoll,
        ioctl, fstat, newfstatat, fallocate, ftruncate, fsync, fdatasync, fchmod, eventfd2, openat, fcntl, mkdirat,
        renameat2, unlinkat, faccessat, readlinkat, getdents64, umask, flock, statx, getcwd, accept4, execve, execveat, socket, connect,
        bind, ptrace, kill, mount, unshare, setuid, memfdCreate, processVMWritev,
    ] + archSpecific

    /// The name of system call `number`, if it is one of these.
    static func name(_ number: Int32) -> String? {
        all.first { $0.number == number }.map { "\($0.name)" }
    }
}
