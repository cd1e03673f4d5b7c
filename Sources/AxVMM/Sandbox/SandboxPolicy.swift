import CKVM

/// What a thread of axvm does after set-up, which decides its filter.
public enum SandboxRole: Sendable, CaseIterable {
    /// The thread that set the VM up: it runs vCPU 0, starts the other vCPU threads, takes
    /// snapshots and writes the results. Its filter is the widest: threads it starts after
    /// set-up inherit it under their own.
    case main
    /// Runs a vCPU (`KVM_RUN` and its exits: devices, snapshots, the dirty log).
    case vcpu
    /// Reads the userfaultfd and populates lazy memory (`UFFDIO_*`, the memfd).
    case fault
    /// Serves a device's queues (image I/O, guest memory, interrupts through irqfd).
    case device
    /// Watches: the watchdog, the signal reader, periodic ticks, the snapshot timer.
    case helper
    /// Answers the control socket (`--api-socket`): takes a connection, reads, writes.
    case control

    /// The name the SIGSYS report uses.
    var name: StaticString {
        switch self {
        case .main: "main"
        case .vcpu: "vCPU"
        case .fault: "fault"
        case .device: "device"
        case .helper: "helper"
        case .control: "control"
        }
    }
}

/// The allow-lists: what each role may call after set-up, given what the run does.
public struct SandboxPolicy: Sendable, Equatable {
    /// The run takes snapshots: files are created, renamed and synced in the snapshot directory.
    public var snapshots = false
    /// The run writes result files (statistics JSON, fault map): a temporary file opened
    /// during set-up is renamed over the target at the end.
    public var outputs = false
    /// The run has a control socket (`--api-socket`): its file is removed at the end.
    public var controlSocket = false
    /// The binary's C library is musl (the static riscv64 build), whose calls differ from
    /// glibc's in places.
    public var musl = ckvm_libc_is_musl() != 0

    public init(snapshots: Bool = false, outputs: Bool = false, controlSocket: Bool = false) {
        self.snapshots = snapshots
        self.outputs = outputs
        self.controlSocket = controlSocket
    }

    typealias S = Syscalls

    /// Every thread: memory (malloc's arenas, views of guest memory), futexes, signals (the
    /// vCPU kick, the SIGSYS report resetting its handler), a call restarted after a signal,
    /// its own end, reads and writes on its descriptors (eventfds, messages), waiting on them.
    static var common: [Syscall] {
        [S.futex, S.exit, S.exitGroup, S.rtSigreturn, S.rtSigprocmask, S.rtSigaction, S.restartSyscall,
         S.mmap, S.munmap, S.mprotect, S.madvise, S.mremap, S.brk, S.clockGettime,
         S.gettid, S.getpid, S.tgkill, S.tkill, S.read, S.write, S.close, S.poll,
         // Sleeps and backing off (the runtimes' own: ThreadSanitizer's waits at exit).
         S.nanosleep, S.clockNanosleep, S.schedYield]
    }

    /// Serving a device's request (a device thread, or the vCPU thread that made a queue ready
    /// or wrote a register): the disk image (virtio-blk: pread, pwrite, fdatasync), entropy
    /// (virtio-rng: getrandom), guest memory given back and taken again (the balloon's hole
    /// punches, fresh frames allocated in the memfd).
    static let deviceService = [S.pread64, S.pwrite64, S.fdatasync, S.getrandom, S.fallocate]

    /// A snapshot, written by whichever vCPU thread leads it (`SnapshotTaker`): the
    /// directory checked and made, its files created, written, synced, renamed into place.
    static var snapshotFiles: [Syscall] {
        [S.openat, S.getdents64, S.newfstatat, S.ftruncate, S.fsync,
         S.renameat2,  // RENAME_EXCHANGE: a new snapshot takes an earlier one's place at once
         S.getcwd,  // realpath of a relative directory
         S.mkdir, S.access, S.readlink, S.rename,
         S.unlink, S.rmdir]  // the earlier snapshot, exchanged out, is removed
    }

    /// Results (statistics JSON, fault map): the temporary file made during set-up gets the
    /// target's mode and is renamed over it, or removed if the run failed.
    static var resultFiles: [Syscall] {
        [S.fchmod, S.fsync, S.rename, S.unlink]
    }

    /// The runtime ioctls by name (`ckvm_runtime_ioctl`: this architecture's), all if nil.
    static func ioctls(_ names: [String]? = nil) -> [UInt32] {
        var out: [UInt32] = []
        var i: Int32 = 0
        while let r = ckvm_runtime_ioctl(i)?.pointee {
            i += 1
            guard let cName = r.name else { continue }
            let name = String(cString: cName)
            if names == nil || names?.contains(name) == true { out.append(UInt32(truncatingIfNeeded: r.request)) }
        }
        return out
    }

    /// Populating lazy memory (minor faults on the memfd) and waking the vCPUs that wait on
    /// it; a pager that stops or fails unregisters RAM so that no vCPU waits for good.
    static let userfaultIoctls = ["UFFDIO_CONTINUE", "UFFDIO_WAKE", "UFFDIO_UNREGISTER"]

    /// glibc's pthread_create: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
    /// CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID. A new
    /// process (fork's flags) or namespace is refused.
    static let threadCloneFlags: UInt32 = 0x3d_0f00
    /// musl's (the static riscv64 build): the same and CLONE_DETACHED, which the kernel ignores.
    static let muslThreadCloneFlags: UInt32 = threadCloneFlags | 0x40_0000

    /// prctl options a thread started after set-up uses to confine itself (<linux/prctl.h>):
    /// PR_SET_NAME 15, PR_CAPBSET_READ 23, PR_CAPBSET_DROP 24, PR_SET_NO_NEW_PRIVS 38, PR_CAP_AMBIENT 47.
    static let selfConfinement: [UInt32] = [15, 23, 24, 38, 47]

    /// The system calls `role` may make, and how.
    func rules(_ role: SandboxRole) -> [Int32: SeccompProgram.Rule] {
        var calls = Self.common
        var rules: [Int32: SeccompProgram.Rule] = [:]
        switch role {
        case .main, .vcpu:
            // KVM_RUN and its exits, the vCPU and VM state a snapshot saves, the dirty log,
            // interrupts; devices served on the vCPU thread.
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls())
            // stdio's first write to a stream (the guest's console, the report) asks what it is.
            calls += Self.deviceService + [S.newfstatat]
            if snapshots {
                calls += Self.snapshotFiles
                if musl {
                    // musl's open(O_CLOEXEC) sets FD_CLOEXEC again (fcntl F_SETFD) and its
                    // fstat is the fstat call (glibc's: newfstatat with AT_EMPTY_PATH).
                    calls += [S.fstat]
                    rules[S.fcntl.number] = .argument(index: 1, values: [UInt32(F_SETFD)])
                }
            }
            if role == .main {
                // The other vCPU threads start after set-up: their first calls (glibc's
                // thread start, then confining themselves) go through this filter too.
                // Threads only: clone with exactly glibc's (or musl's) pthread_create flags;
                // clone3 fails with ENOSYS (its flags are out of a filter's reach) and glibc
                // falls back.
                calls += [S.setRobustList, S.rseq, S.capset, S.seccomp, S.schedGetaffinity]
                rules[S.clone.number] = .argument(index: 0, values: [Self.threadCloneFlags, Self.muslThreadCloneFlags])
                rules[S.clone3.number] = .fails(errno: UInt16(ENOSYS))
                rules[S.prctl.number] = .argument(index: 0, values: Self.selfConfinement)
                // The end of the run: the host check (mincore), /proc/self/status (kept open).
                calls += [S.mincore]
                if outputs { calls += Self.resultFiles }
                if controlSocket { calls += [S.unlink] }
            }
        case .fault:
            // A restore's lazy pages come from the snapshot's memory file (pread) into the memfd (pwrite).
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(Self.userfaultIoctls))
            // A lazy restore checks the memory file has not shrunk under it (fstat).
            calls += [S.fallocate, S.pread64, S.pwrite64, S.newfstatat]
        case .device:
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(Self.userfaultIoctls))
            calls += Self.deviceService
        case .helper:
            // The IRQ resampler's pulse (KVM_IRQ_LINE); the watchdog freeing a vCPU stuck in a
            // fault: guest memory fenced (mprotect, UFFDIO_UNREGISTER wakes every waiter).
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(["KVM_IRQ_LINE", "UFFDIO_WAKE", "UFFDIO_UNREGISTER"]))
        case .control:
            // Connections to the socket made during set-up; a request may change the balloon's
            // target (its interrupt: an eventfd write).
            calls += [S.accept4]
        }
        for c in calls where rules[c.number] == nil { rules[c.number] = .any }
        return rules
    }

    /// `role`'s filter for this architecture.
    func program(_ role: SandboxRole) throws(VMMError) -> SeccompProgram {
        try SeccompProgram(allowed: rules(role), arch: CKVM_AUDIT_ARCH, abiLimit: CKVM_SYSCALL_ABI_LIMIT)
    }
}
