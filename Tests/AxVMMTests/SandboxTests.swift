@testable import AxVMM
import CKVM
import Glibc
import Testing

/// The sandbox's BPF programs, run through the evaluator (the same instructions the kernel
/// gets; `SandboxProcessTests` checks the kernel agrees).
struct SandboxProgramTests {
    static let policies = [SandboxPolicy(), SandboxPolicy(snapshots: true, outputs: true), muslSnapshots]
    /// What a musl build's snapshots add: fcntl(F_SETFD), fstat.
    static var muslSnapshots: SandboxPolicy {
        var p = SandboxPolicy(snapshots: true)
        p.musl = true
        return p
    }
    static let allow = SeccompProgram.allow, trap = SeccompProgram.trap, kill = SeccompProgram.killProcess

    static func program(_ role: SandboxRole, _ policy: SandboxPolicy = SandboxPolicy()) throws -> SeccompProgram {
        try policy.program(role)
    }

    @Test func everyRoleRefusesWhatAnExploitCallsFirst() throws {
        let refused = [Syscalls.execve, Syscalls.execveat, Syscalls.socket, Syscalls.connect, Syscalls.bind, Syscalls.ptrace,
                       Syscalls.kill, Syscalls.mount, Syscalls.unshare, Syscalls.setuid, Syscalls.memfdCreate,
                       Syscalls.processVMWritev] + Syscalls.archSpecific.filter { "\($0.name)" == "fork" || "\($0.name)" == "vfork" }
        for policy in Self.policies {
            for role in SandboxRole.allCases {
                let p = try Self.program(role, policy)
                for c in refused {
                    #expect(p.evaluate(number: c.number, arch: CKVM_AUDIT_ARCH) == Self.trap, "\(role): \(c.name)")
                }
            }
        }
    }

    @Test func anotherABIIsRefused() throws {
        for role in SandboxRole.allCases {
            let p = try Self.program(role)
            // The right number through another architecture's entry (i386's int 0x80 on x86_64).
            #expect(p.evaluate(number: Syscalls.read.number, arch: CKVM_AUDIT_ARCH ^ 0x8000_0000) == Self.kill)
            if CKVM_SYSCALL_ABI_LIMIT != 0 {
                // x32: read's number with __X32_SYSCALL_BIT.
                #expect(p.evaluate(number: Syscalls.read.number | Int32(CKVM_SYSCALL_ABI_LIMIT), arch: CKVM_AUDIT_ARCH) == Self.trap)
            }
        }
    }

    @Test func everyRuleAllowsItsCallAndOnlyItsValues() throws {
        for policy in Self.policies {
            for role in SandboxRole.allCases {
                let p = try Self.program(role, policy)
                for (number, rule) in policy.rules(role) {
                    switch rule {
                    case let .fails(errno):
                        #expect(p.evaluate(number: number, arch: CKVM_AUDIT_ARCH) == SeccompProgram.error | UInt32(errno))
                    case .any:
                        #expect(p.evaluate(number: number, arch: CKVM_AUDIT_ARCH) == Self.allow, "\(role): \(number)")
                    case let .argument(index, values):
                        for v in values {
                            var args = [UInt64](repeating: 0, count: 6)
                            args[index] = UInt64(v)
                            #expect(p.evaluate(number: number, arch: CKVM_AUDIT_ARCH, arguments: args) == Self.allow)
                            // The kernel reads ioctl's cmd as 32 bits: high bits change nothing.
                            args[index] = UInt64(v) | 0xffff_ffff_0000_0000
                            #expect(p.evaluate(number: number, arch: CKVM_AUDIT_ARCH, arguments: args) == Self.allow)
                        }
                        var args = [UInt64](repeating: 0, count: 6)
                        args[index] = 0x5412  // TIOCSTI: pushes input into a terminal
                        #expect(p.evaluate(number: number, arch: CKVM_AUDIT_ARCH, arguments: args) == Self.trap)
                    }
                }
            }
        }
    }

    @Test func ioctlsFollowTheRole() throws {
        let kvmRun = UInt64(CKVM_KVM_RUN), cont = UInt64(CKVM_UFFDIO_CONTINUE)
        let ioctl = Syscalls.ioctl.number, arch = CKVM_AUDIT_ARCH
        let vcpu = try Self.program(.vcpu), fault = try Self.program(.fault), helper = try Self.program(.helper)
        #expect(vcpu.evaluate(number: ioctl, arch: arch, arguments: [3, kvmRun]) == Self.allow)
        #expect(fault.evaluate(number: ioctl, arch: arch, arguments: [3, kvmRun]) == Self.trap)
        #expect(fault.evaluate(number: ioctl, arch: arch, arguments: [3, cont]) == Self.allow)
        #expect(helper.evaluate(number: ioctl, arch: arch, arguments: [3, kvmRun]) == Self.trap)
        // Creating anything is set-up's: no thread may make a VM, a vCPU or a userfaultfd later.
        for role in SandboxRole.allCases {
            let p = try Self.program(role, SandboxPolicy(snapshots: true, outputs: true))
            for r in [CKVM_KVM_CREATE_VM, CKVM_KVM_CREATE_VCPU, CKVM_USERFAULTFD_IOC_NEW, CKVM_UFFDIO_API, CKVM_UFFDIO_REGISTER] {
                #expect(p.evaluate(number: ioctl, arch: arch, arguments: [3, UInt64(r)]) == Self.trap, "\(role): \(r)")
            }
        }
    }

    @Test func filesByNameOnlyForSnapshotsAndResults() throws {
        let openat = Syscalls.openat.number, arch = CKVM_AUDIT_ARCH
        for role in SandboxRole.allCases {
            #expect(try Self.program(role).evaluate(number: openat, arch: arch) == Self.trap, "\(role)")
        }
        let snapshots = SandboxPolicy(snapshots: true)
        #expect(try Self.program(.vcpu, snapshots).evaluate(number: openat, arch: arch) == Self.allow)
        #expect(try Self.program(.main, snapshots).evaluate(number: openat, arch: arch) == Self.allow)
        for role in [SandboxRole.fault, .device, .helper] {
            #expect(try Self.program(role, snapshots).evaluate(number: openat, arch: arch) == Self.trap, "\(role)")
        }
        // Results: the temporary file is renamed, nothing is opened.
        let results = SandboxPolicy(outputs: true)
        #expect(try Self.program(.main, results).evaluate(number: openat, arch: arch) == Self.trap)
        #expect(try Self.program(.main, results).evaluate(number: Syscalls.fchmod.number, arch: arch) == Self.allow)
        #expect(try Self.program(.vcpu, results).evaluate(number: Syscalls.fchmod.number, arch: arch) == Self.trap)
    }

    /// A musl build's snapshot calls (fcntl only to set FD_CLOEXEC, fstat) on the vCPU
    /// threads that write snapshots, and nowhere in a glibc build's.
    @Test func muslSnapshotCallsOnlyWhereNeeded() throws {
        let fcntl = Syscalls.fcntl.number, fstat = Syscalls.fstat.number, arch = CKVM_AUDIT_ARCH
        var glibc = SandboxPolicy(snapshots: true)
        glibc.musl = false
        for role in [SandboxRole.main, .vcpu] {
            let musl = try Self.program(role, Self.muslSnapshots)
            #expect(musl.evaluate(number: fcntl, arch: arch, arguments: [3, UInt64(F_SETFD), 1]) == Self.allow)
            #expect(musl.evaluate(number: fcntl, arch: arch, arguments: [3, UInt64(F_SETFL), 0]) == Self.trap)
            #expect(musl.evaluate(number: fcntl, arch: arch, arguments: [3, UInt64(F_DUPFD), 0]) == Self.trap)
            #expect(musl.evaluate(number: fstat, arch: arch) == Self.allow)
            #expect(try Self.program(role, glibc).evaluate(number: fcntl, arch: arch, arguments: [3, UInt64(F_SETFD), 1]) == Self.trap)
        }
        #expect(try Self.program(.fault, Self.muslSnapshots).evaluate(number: fcntl, arch: arch, arguments: [3, UInt64(F_SETFD), 1]) == Self.trap)
    }

    @Test func threadsButNoProcesses() throws {
        let clone = Syscalls.clone.number, arch = CKVM_AUDIT_ARCH
        let main = try Self.program(.main)
        #expect(main.evaluate(number: clone, arch: arch, arguments: [0x3d_0f00]) == Self.allow)
        #expect(main.evaluate(number: clone, arch: arch, arguments: [0x7d_0f00]) == Self.allow)  // musl's flags
        #expect(main.evaluate(number: clone, arch: arch, arguments: [0x11]) == Self.trap)  // fork: SIGCHLD
        #expect(main.evaluate(number: clone, arch: arch, arguments: [0x3d_0f00 | 0x1000_0000]) == Self.trap)  // CLONE_NEWUSER
        #expect(main.evaluate(number: Syscalls.clone3.number, arch: arch) == SeccompProgram.error | UInt32(ENOSYS))
        for role in [SandboxRole.vcpu, .fault, .device, .helper] {
            #expect(try Self.program(role).evaluate(number: clone, arch: arch, arguments: [0x3d_0f00]) == Self.trap)
            #expect(try Self.program(role).evaluate(number: Syscalls.clone3.number, arch: arch) == Self.trap)
        }
    }

    @Test func prctlOnlyToConfineAThread() throws {
        let prctl = Syscalls.prctl.number, arch = CKVM_AUDIT_ARCH
        let main = try Self.program(.main)
        #expect(main.evaluate(number: prctl, arch: arch, arguments: [15]) == Self.allow)  // PR_SET_NAME
        #expect(main.evaluate(number: prctl, arch: arch, arguments: [38, 1]) == Self.allow)  // PR_SET_NO_NEW_PRIVS
        #expect(main.evaluate(number: prctl, arch: arch, arguments: [4, 1]) == Self.trap)  // PR_SET_DUMPABLE
        #expect(main.evaluate(number: prctl, arch: arch, arguments: [22, 0]) == Self.trap)  // PR_SET_SECCOMP
        for role in [SandboxRole.vcpu, .fault, .device, .helper] {
            #expect(try Self.program(role).evaluate(number: prctl, arch: arch, arguments: [15]) == Self.trap)
        }
    }

    @Test func programIsAStraightLineWithinBPFLimits() throws {
        for role in SandboxRole.allCases {
            let p = try Self.program(role, SandboxPolicy(snapshots: true, outputs: true))
            #expect(p.instructions.count < 512)
            // Every jump lands inside the program.
            for (i, ins) in p.instructions.enumerated() where ins.code == SeccompProgram.jumpIfEqual || ins.code == SeccompProgram.jumpIfAtLeast {
                #expect(i + 1 + Int(max(ins.jt, ins.jf)) < p.instructions.count)
            }
        }
        // A rule with more values than one block holds is refused, not truncated.
        let tooMany = [Syscalls.ioctl.number: SeccompProgram.Rule.argument(index: 1, values: Array(0..<200))]
        #expect(throws: VMMError.self) { try SeccompProgram(allowed: tooMany, arch: CKVM_AUDIT_ARCH, abiLimit: 0) }
    }

    @Test func processMemoryParsesStatus() {
        let m = ProcessMemory.parse("Name:\taxvm\nVmRSS:\t  123456 kB\nRssAnon:\t 1 kB\nRssShmem:\t   2048 kB\n")
        #expect(m.rss == 123456 * 1024)
        #expect(m.shmem == 2048 * 1024)
    }
}

/// The sandbox in real axvm processes: each role's thread killed by SIGSYS for a refused call
/// (the test hook AXVM_SANDBOX_PROBE), every thread confined with no capabilities, and what
/// each thread calls (strace) against the lists.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct SandboxProcessTests {
    static let sigsys: Int32 = -31

    @Test(arguments: [("main", "execve", "main"), ("vcpu", "socket", "vCPU"), ("fault", "openat", "fault"),
                      ("helper", "execve", "helper")])
    func aRefusedCallEndsTheProcessWithSIGSYS(role: String, call: String, reported: String) throws {
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "64M", "--vcpus", "2"],
                                environment: ["AXVM_SANDBOX_PROBE=\(role):\(call)"])
        let status = p.wait(seconds: 60)
        #expect(status == Self.sigsys, "\(p.errText)")
        #expect(p.errText.contains("axvm: sandbox: the \(reported) thread made system call \(call) ("), "\(p.errText)")
    }

    @Test func noSandboxRunsWithoutFilters() throws {
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "64M", "--no-sandbox"],
                                environment: ["AXVM_SANDBOX_PROBE=main:execve"])
        #expect(p.wait(seconds: 60) == 0, "\(p.errText)")
    }

    @Test func aBadProbeIsRefusedByName() throws {
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "64M"], environment: ["AXVM_SANDBOX_PROBE=fault:nosuchcall"])
        #expect(p.wait(seconds: 60) == 2)
        #expect(p.errText.contains("fault:nosuchcall"), "\(p.errText)")
    }

    /// /proc/PID/task/*/status of a running VM: every thread in seccomp filter mode with
    /// no_new_privs and no capability at all (root runs this test, so there were some).
    @Test func everyThreadIsConfinedWithoutCapabilities() throws {
        var p = try AxvmProcess(["run", guestPath("spin"), "--vcpus", "2", "--timeout", "20"])
        defer { kill(p.pid, SIGKILL); _ = p.wait(seconds: 10) }
        let t0 = monotonicSeconds()
        var tasks: [String: [String: String]] = [:]
        while monotonicSeconds() - t0 < 15 {
            tasks = Self.taskStatus(p.pid)
            // vCPU 1's thread, the fault thread, the watchdog, the signal reader, the main thread.
            if tasks.count >= 5 && tasks.values.allSatisfy({ $0["Seccomp"] == "2" }) { break }
            usleep(50_000)
        }
        #expect(tasks.count >= 5, "threads: \(tasks.keys.sorted())")
        for (name, fields) in tasks {
            #expect(fields["Seccomp"] == "2", "\(name): \(fields)")
            #expect(fields["NoNewPrivs"] == "1", "\(name)")
            for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                #expect(fields[cap] == "0000000000000000", "\(name): \(cap) \(fields[cap] ?? "?")")
            }
        }
        // vCPU 1 started after set-up: the main thread's filter and its own.
        #expect(tasks.first { $0.key.hasPrefix("axvm-vcpu1") }?.value["Seccomp_filters"] == "2")
    }

    /// An unprivileged user (nobody) with access to a KVM device node of its own and
    /// vm.unprivileged_userfaultfd=1 (what a host without /dev/userfaultfd rights needs) runs
    /// memtest with its statistics; without the userfaultfd right it is told what is missing.
    @Test(.enabled(if: getuid() == 0, "needs root to make the device node and set the sysctl"))
    func runsAsAnUnprivilegedUser() throws {
        let dir = temporaryPath("unprivileged")
        let sysctl = "/proc/sys/vm/unprivileged_userfaultfd"
        let saved = fileBytes(sysctl) ?? Array("0\n".utf8)
        defer {
            _ = writeFile(sysctl, saved)
            _ = system("rm -rf '\(dir)'")
        }
        var st = stat()
        try #require(stat("/dev/kvm", &st) == 0)
        try #require(system("rm -rf '\(dir)' && mkdir -m 755 '\(dir)' && cp '\(guestPath("memtest"))' '\(dir)/' && chmod 644 '\(dir)/memtest.bin'") == 0)
        try #require(mknod("\(dir)/kvm", S_IFCHR | 0o600, st.st_rdev) == 0)
        try #require(chown("\(dir)/kvm", 65534, 65534) == 0)
        try #require(chown(dir, 65534, 65534) == 0)
        let run = "setpriv --reuid 65534 --regid 65534 --clear-groups '\(AxvmProcess.binary)' run '\(dir)/memtest.bin' --memory 64M --kvm '\(dir)/kvm' --stats-json '\(dir)/s.json' >/dev/null 2>'\(dir)/err'"
        try #require(writeFile(sysctl, Array("1\n".utf8)))
        let ok = system(run)
        #expect(ok == 0, "\(String(decoding: fileBytes("\(dir)/err") ?? [], as: UTF8.self))")
        #expect(String(decoding: fileBytes("\(dir)/s.json") ?? [], as: UTF8.self).contains("\"mismatches\": 0"))
        try #require(writeFile(sysctl, Array("0\n".utf8)))
        let refused = system(run)
        #expect(refused != 0)
        #expect(String(decoding: fileBytes("\(dir)/err") ?? [], as: UTF8.self).contains("vm.unprivileged_userfaultfd=1"))
    }

    /// Thread name (with its tid) → fields of its /proc status.
    static func taskStatus(_ pid: pid_t) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        guard let d = opendir("/proc/\(pid)/task") else { return out }
        defer { closedir(d) }
        while let e = readdir(d) {
            let tid = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard tid.first?.isNumber == true, let bytes = fileBytes("/proc/\(pid)/task/\(tid)/status") else { continue }
            var fields: [String: String] = [:]
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[String(line[..<colon])] = String(line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" })
            }
            out["\(fields["Name"] ?? "?")/\(tid)"] = fields
        }
        return out
    }

    /// Calls of a role's own list (beyond `SandboxPolicy.common`, the baseline every thread
    /// has) that no run here reaches, each with the path that needs it; the KVM rigs run those
    /// paths with the sandbox on. Any other allowed call no thread made is an entry nothing
    /// needs: the test fails.
    static let notReachedHere: [SandboxRole: [String: String]] = [
        .main: ["fdatasync": "virtio-blk flushes served on the vCPU thread (Linux guests, the rigs)",
                "getrandom": "virtio-rng requests served on the vCPU thread (Linux guests, the rigs)",
                "newfstatat": "stdio's first write to a stream after set-up",
                "sched_getaffinity": "ThreadSanitizer's pthread_create (the TSan run of these tests)"],
        .vcpu: ["fdatasync": "virtio-blk flushes (Linux guests, the rigs)",
                "getrandom": "virtio-rng requests (Linux guests, the rigs)",
                "fallocate": "memtest's reclaim device, the balloon, fresh frames for a device (vCPU 0 here)",
                "getcwd": "a relative snapshot directory when vCPU 1 leads the snapshot",
                "renameat2": "replacing an earlier snapshot when vCPU 1 leads", "unlinkat": "as renameat2",
                "unlink": "as renameat2", "rmdir": "as renameat2",
                "mkdir": "a snapshot vCPU 1 leads (the last vCPU to stop leads)", "mkdirat": "as mkdir",
                "access": "as mkdir", "faccessat": "as mkdir", "readlink": "as getcwd", "readlinkat": "as getcwd"],
        .fault: ["newfstatat": "a lazy restore whose memory file shrank under it (SnapshotIntegrityTests)"],
        .helper: ["ioctl": "KVM_IRQ_LINE (x86 Linux's IRQ resampler), UFFDIO_WAKE/UNREGISTER (the watchdog fencing guest memory for a vCPU stuck in a fault)"],
    ]

    /// Runs memtest (2 vCPUs, results files), a snapshot, a diff snapshot of its restore, a
    /// populated restore, a timeout, Ctrl-C and the --max-resident failure under `strace -f`,
    /// and finds which calls each thread made after it was confined.
    @Test func threadsCallOnlyWhatTheirListsHold() throws {
        try #require(access("/usr/bin/strace", X_OK) == 0, "strace missing: scripts/setup.sh installs it")
        let dir = temporaryPath("strace")
        defer { _ = system("rm -rf '\(dir)'") }
        try #require(system("rm -rf '\(dir)' && mkdir -p '\(dir)'") == 0)
        let axvm = AxvmProcess.binary
        let runs: [(String, Int32)] = [
            ("run \(guestPath("memtest")) --memory 64M --vcpus 2 --fault-threads 2 --stats --stats-json \(dir)/s.json --fault-map \(dir)/f.svg", 0),
            ("run \(guestPath("memtest")) --memory 64M --vcpus 2 --snapshot \(dir)/snap --snapshot-after 0.05", 0),
            ("restore \(dir)/snap --stats-json \(dir)/r.json --snapshot \(dir)/snap2 --snapshot-diff --snapshot-after 0.01", 0),
            ("restore \(dir)/snap2 --populate", 0),
            // One vCPU: the set-up thread leads the snapshot, into a directory named relative
            // to the working directory; the second replaces the first.
            ("run \(guestPath("memtest")) --memory 64M --snapshot one --snapshot-after 0.05", 0),
            ("run \(guestPath("memtest")) --memory 64M --snapshot one --snapshot-after 0.05", 0),
            // A diff snapshot names its parent by its real path (getcwd, readlink).
            ("restore one --snapshot one-diff --snapshot-diff --snapshot-after 0.01", 0),
            ("run \(guestPath("spin")) --timeout 1", 124),
            ("run \(guestPath("memtest")) --memory 64M --max-resident 8M", 3),
        ]
        var used: [SandboxRole: Set<String>] = [:]
        for (i, (args, expected)) in runs.enumerated() {
            let trace = "\(dir)/trace-\(i)"
            let status = system("cd '\(dir)' && strace -f -qq -o '\(trace)' '\(axvm)' \(args) >/dev/null 2>'\(trace).err'")
            // system(): the exit status in bits 8-15; a signal (SIGSYS) in the low bits.
            let err = String(decoding: fileBytes("\(trace).err") ?? [], as: UTF8.self)
            #expect(status == expected << 8, "\(args): status \(status >> 8), signal \(status & 0x7f): \(err)")
            for (role, calls) in Self.confinedCalls(String(decoding: fileBytes(trace) ?? [], as: UTF8.self)) {
                used[role, default: []].formUnion(calls)
            }
        }
        let policy = SandboxPolicy(snapshots: true, outputs: true)
        for role in [SandboxRole.main, .vcpu, .fault, .helper] {
            let allowed = Set(policy.rules(role).keys.compactMap { Syscalls.name($0) })
            let made = used[role] ?? []
            #expect(!made.isEmpty, "\(role): no confined calls seen")
            #expect(made.isSubset(of: allowed), "\(role) made \(made.subtracting(allowed).sorted()), not on its list")
            let common = Set(SandboxPolicy.common.map { "\($0.name)" })
            let unused = allowed.subtracting(made).subtracting(common).subtracting(Self.notReachedHere[role]?.keys.map { $0 } ?? [])
            #expect(unused.isEmpty, "\(role) may call \(unused.sorted()), which no run made and no path is listed for")
        }
    }

    /// Role → system calls made after the thread was confined: after its own seccomp() (its
    /// name from the PR_SET_NAME just before), or from birth when a confined thread started it.
    static func confinedCalls(_ trace: String) -> [SandboxRole: Set<String>] {
        var name: [String: String] = [:], confined: [String: SandboxRole] = [:]
        var out: [SandboxRole: Set<String>] = [:]
        func role(_ n: String) -> SandboxRole {
            n == "axvm" ? .main : n.hasPrefix("axvm-vcpu") ? .vcpu : n.hasPrefix("axvm-fault") ? .fault
                : n.hasPrefix("axvm-virtio") ? .device : .helper
        }
        // A clone's line ends "= CHILD": the child starts under the filter of the thread that made it.
        func inherit(_ line: Substring, _ r: SandboxRole) {
            guard let child = line.split(separator: "=").last.map({ String($0.drop { $0 == " " }) }), Int(child) != nil else { return }
            confined[child] = confined[child] ?? r
        }
        for line in trace.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard fields.count == 2 else { continue }
            let pid = String(fields[0])
            var rest = fields[1].drop { $0 == " " }
            if rest.hasPrefix("<... ") {
                // A resumed call: only a clone's child pid matters here.
                rest = rest.dropFirst(5)
                let call = String(rest.prefix { $0 != " " })
                if call.hasPrefix("clone"), let r = confined[pid] { inherit(line, r) }
                continue
            }
            guard let paren = rest.firstIndex(of: "(") else { continue }
            let call = String(rest[..<paren])
            guard call.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !call.isEmpty else { continue }
            if call == "prctl" && rest.contains("PR_SET_NAME"), let q = rest.split(separator: "\"").dropFirst().first {
                name[pid] = String(q)
            }
            if call == "seccomp", let n = name[pid] {
                // Made under the filter it inherited, if any.
                if let r = confined[pid] { out[r, default: []].insert(call) }
                confined[pid] = role(n)
                continue
            }
            if let r = confined[pid] {
                out[r, default: []].insert(call)
                if call.hasPrefix("clone"), !line.hasSuffix("...>") { inherit(line, r) }
            }
        }
        return out
    }
}
