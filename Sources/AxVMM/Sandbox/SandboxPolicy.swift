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

    /// The name the SIGSYS report uses.
    var name: StaticString {
        switch self {
        case .main: "main"
        case .vcpu: "vCPU"
        case .fault: "fault"
        case .device: "device"
        case .helper: "helper"
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

    public init(snapshots: Bool = false, outputs: Bool = false) {
        self.snapshots = snapshots
        self.outputs = outputs
    }

    typealias S = Syscalls

    /// Every thread: memory, futexes, signals, time, its own end, writes (its messages, eventfds).
    static var common: [Syscall] {
        [S.futex, S.exit, S.exitGroup, S.rtSigreturn, S.rtSigprocmask, S.rtSigaction, S.sigaltstack, S.restartSyscall,
         S.mmap, S.munmap, S.mprotect, S.madvise, S.mremap, S.brk, S.clockGettime, S.clockNanosleep, S.nanosleep,
         S.gettid, S.getpid, S.tgkill, S.schedYield, S.getcpu, S.getrandom, S.rseq, S.setRobustList,
         S.read, S.write, S.ppoll, S.close, S.fstat, S.newfstatat] + oldForms([.poll])
    }

    /// x86_64's old forms of calls (glibc's `poll`, `rename`, … there); none elsewhere.
    enum OldForm { case poll, files }
    static func oldForms(_ forms: [OldForm]) -> [Syscall] {
        #if arch(x86_64)
        forms.flatMap { f -> [Syscall] in
            switch f {
            case .poll: [S.poll]
            case .files: [S.open, S.mkdir, S.rename, S.renameat, S.unlink, S.rmdir, S.access, S.readlink]
            }
        }
        #else
        []
        #endif
    }

    /// The runtime ioctls by name (ckvm_runtime_ioctls: this architecture's).
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

    // UFFDIO_UNREGISTER: a pager that fails (the --max-resident cap) unregisters RAM so no vCPU waits.
    static let userfaultIoctls = ["UFFDIO_COPY", "UFFDIO_ZEROPAGE", "UFFDIO_WAKE", "UFFDIO_CONTINUE", "UFFDIO_UNREGISTER"]

    /// prctl options a thread started after set-up uses to confine itself (<linux/prctl.h>):
    /// PR_SET_NAME 15, PR_CAPBSET_READ 23, PR_CAPBSET_DROP 24, PR_SET_NO_NEW_PRIVS 38, PR_CAP_AMBIENT 47.
    static let selfConfinement: [UInt32] = [15, 23, 24, 38, 47]

    /// The system calls `role` may make, and how.
    func rules(_ role: SandboxRole) -> [Int32: SeccompProgram.Rule] {
        var calls = Self.common
        var rules: [Int32: SeccompProgram.Rule] = [:]
        let io = [S.pread64, S.pwrite64, S.preadv, S.pwritev, S.readv, S.writev, S.lseek, S.fallocate, S.mincore]
        switch role {
        case .main, .vcpu:
            calls += io + [S.ftruncate, S.fsync, S.fdatasync, S.eventfd2, S.schedGetaffinity, S.schedSetaffinity]
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls())
            if outputs || snapshots {
                calls += [S.fchmod, S.renameat2, S.unlinkat] + Self.oldForms([.files])
            }
            if snapshots {
                calls += [S.openat, S.mkdirat, S.faccessat, S.readlinkat, S.getdents64, S.umask, S.flock, S.statx]
            }
            if role == .main {
                // Starting the other vCPU threads (and the snapshot timer), which confine themselves.
                calls += [S.clone, S.clone3, S.capget, S.capset, S.seccomp]
                rules[S.prctl.number] = .argument(index: 0, values: Self.selfConfinement)
            }
        case .fault:
            calls += [S.pread64, S.pwrite64, S.fallocate, S.mincore, S.schedSetaffinity]
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(Self.userfaultIoctls))
        case .device:
            calls += io + [S.fsync, S.fdatasync]
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(Self.userfaultIoctls + ["KVM_IRQ_LINE"]))
        case .helper:
            rules[S.ioctl.number] = .argument(index: 1, values: Self.ioctls(["UFFDIO_WAKE", "KVM_IRQ_LINE"]))
        }
        for c in calls where rules[c.number] == nil { rules[c.number] = .any }
        return rules
    }

    /// `role`'s filter for this architecture.
    func program(_ role: SandboxRole) throws(VMMError) -> SeccompProgram {
        try SeccompProgram(allowed: rules(role), arch: CKVM_AUDIT_ARCH, abiLimit: CKVM_SYSCALL_ABI_LIMIT)
    }
}
