import AxAddrSpace
import AxVMM
import CKVM
import Testing

/// Real guests on real KVM with real userfaultfd faults.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct GuestTests {
    @Test func helloPrintsOverSerialAndExits() throws {
        let r = try runGuest("hello")
        #expect(r.exit == .guestExit(code: 0))
        #expect(r.serialOutput == "Hello from a real-mode guest on axvm\n")
    }

    @Test(arguments: GuestParams.Order.allCases)
    func lazyAndPopulatedMemtestAgree(order: GuestParams.Order) throws {
        let size: UInt64 = 16 << 20
        let expected = expectedChecksum(base: VMConfig.testBase, size: size - VMConfig.testBase, seed: 7)
        for lazy in [true, false] {
            let r = try runGuest("memtest") { c in
                c.memorySize = size
                c.lazy = lazy
                c.testOrder = order
                c.seed = 7
                c.stridePages = 5
            }
            #expect(r.exit == .guestExit(code: 0), "lazy \(lazy): \(r.exit)")
            #expect(r.memtest?.checksum == expected, "lazy \(lazy)")
            #expect(r.memtest?.mismatches == 0)
            #expect(r.memtest?.pagesTouched == (size - VMConfig.testBase) / 4096)
            #expect(r.residencyMismatches == 0)
            if lazy {
                #expect(r.statistics.faults > 0)
            } else {
                #expect(r.statistics.faults == 0)
                #expect(r.statistics.populatedBytes == size)
            }
        }
    }

    /// Exactly one fault per fault-around window of the test region. Outside it: the stack
    /// page, and with windows wider than a page, unpopulated pages next to the loader's
    /// boot data (parameter page and GDT, page tables, page directories at 0x20000) and
    /// code, which KVM may touch itself — at most four windows.
    @Test(arguments: [UInt64(4096), 64 << 10, 2 << 20])
    func faultCountIsPagesOverFaultAround(faultAround: UInt64) throws {
        let size: UInt64 = 32 << 20
        let r = try runGuest("memtest") { c in
            c.memorySize = size
            c.faultAround = faultAround
            c.testOrder = .random
        }
        #expect(r.exit == .guestExit(code: 0))
        let testPages = (size - VMConfig.testBase) / 4096
        #expect(UInt64(r.statistics.faultsInTestRegion) == testPages / (faultAround / 4096))
        #expect(r.statistics.faults - r.statistics.faultsInTestRegion >= 1)
        #expect(r.statistics.faults - r.statistics.faultsInTestRegion <= 4)
        #expect(r.residencyMismatches == 0)
        #expect(r.statistics.populatedBytes <= size)
    }

    @Test func randomOneGiBMemtestCompletes() throws {
        let size: UInt64 = 1 << 30
        let r = try runGuest("memtest") { c in
            c.memorySize = size
            c.testOrder = .random
            c.seed = 3
            c.timeout = 300
        }
        #expect(r.exit == .guestExit(code: 0))
        #expect(r.memtest?.checksum == expectedChecksum(base: VMConfig.testBase, size: size - VMConfig.testBase, seed: 3))
        #expect(UInt64(r.statistics.faultsInTestRegion) == (size - VMConfig.testBase) / 4096)
        #expect(r.residencyMismatches == 0)
    }

    /// Two rounds of fill, reclaim, read zeros. Lazy: faults on the first fill and on each
    /// read after a reclaim; populated: the same minus the first fill. A populated area
    /// stays under the pager, so the kernel never supplies a page the library does not
    /// know (the second reclaim would then leave old data behind).
    @Test(arguments: [true, false])
    func reclaimedPagesFaultAgainAndReadZero(lazy: Bool) throws {
        let r = try runGuest("retouch") { $0.lazy = lazy }
        #expect(r.exit == .guestExit(code: 0), "\(r.serialOutput)")
        #expect(r.memtest?.mismatches == 0)
        let pages = (16 << 20 - VMConfig.testBase) / 4096
        #expect(UInt64(r.statistics.faultsInTestRegion) == (lazy ? 3 : 2) * pages)
        #expect(r.residencyMismatches == 0)
    }

    /// RAM above the 32-bit hole: 8 GiB and 64 GiB guests, lazily, with the test pages
    /// spread over all of RAM; the checksum is worked out here from the page formula.
    @Test(arguments: [UInt64(8) << 30, 64 << 30])
    func memoryAboveFourGiB(size: UInt64) throws {
        var config = VMConfig(guestPath: guestPath("memtest"))
        config.memorySize = size
        config.testSize = 16 << 20
        config.sparse = true
        config.testOrder = .random
        config.seed = 11
        let params = Machine.guestParamsForTests(config)
        #expect(params.spacing > 1)
        let last = params.testPageAddress(params.testPages - 1)
        #expect(last >= 1 << 32 && last < params.ramEnd)
        let r = try runGuest("memtest") { $0 = config; $0.timeout = 120 }
        #expect(r.exit == .guestExit(code: 0), "\(r.serialOutput)")
        #expect(r.memtest?.checksum == expectedChecksum(params))
        #expect(r.memtest?.pagesTouched == params.testPages)
        #expect(r.residencyMismatches == 0)
        #expect(r.statistics.populatedBytes < 32 << 20)
    }

    /// The guest's memory counts once in the process's RSS (no second mapping of guest
    /// pages through the VMM's view of the memfd). RSS is process-wide, so the run has a
    /// process of its own (an exit test): in the test process, the VMs of the suites that
    /// `swift test` runs alongside would count too.
    @Test func guestMemoryIsResidentOnce() async {
        await #expect(processExitsWith: .success) {
            let r = try runGuest("memtest") { $0.memorySize = 256 << 20 }
            let s = r.statistics
            #expect(r.exit == .guestExit(code: 0))
            #expect(s.shmemRSSBytes <= s.populatedBytes + (8 << 20), "RssShmem \(s.shmemRSSBytes) for \(s.populatedBytes) populated")
            #expect(s.processRSSBytes == s.shmemRSSBytes + s.vmmOverheadBytes)
        }
    }

    @Test func haltWithInterruptsDisabledIsADeadGuest() throws {
        let r = try runGuest("halt")
        guard case .deadHalt = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(r.exitStatus == 4)
    }

    /// The kernel-mode build of memtest (CPL 0 throughout) gives the same checksum.
    @Test func kernelModeMemtest() throws {
        let r = try runGuest("memtest-kernel") { $0.memorySize = 8 << 20 }
        #expect(r.exit == .guestExit(code: 0))
        #expect(r.memtest?.checksum == expectedChecksum(base: VMConfig.testBase, size: (8 << 20) - VMConfig.testBase, seed: 1))
    }

    @Test func unmappedAccessIsReportedWithTheGPA() throws {
        let r = try runGuest("outside")
        guard case let .unmappedAccess(gpa, write, _, _) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(gpa == 0xc000_0000 && !write)
        #expect(r.exitStatus != 0)
    }

    @Test func writeToReadOnlyAreaIsReported() throws {
        let r = try runGuest("romwrite")
        #expect(r.serialOutput.contains("reads AXVMROM!"))
        guard case let .readOnlyWrite(gpa, _) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(gpa == X86Layout.romBase)
    }

    @Test func guestThatNeverExitsTimesOut() throws {
        let r = try runGuest("spin") { $0.timeout = 0.5 }
        guard case .timeout = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(r.exitStatus == 124)
    }

    /// kvm_pvm keeps the registers of a guest that shut down; kvm_amd resets the vCPU
    /// before exiting (then the report has none, and says why).
    @Test func tripleFaultIsReportedWithRegisters() throws {
        let r = try runGuest("triple")
        guard case let .shutdown(regs) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(r.exitStatus == 3)
        if KVMFlavour.detect().module == .kvmAMD {
            #expect(regs == nil || regs?.cr3 == 0x9000)
        } else {
            let regs = try #require(regs)
            #expect(regs.cr3 == 0x9000 && regs.cr0 & 0x8000_0001 == 0x8000_0001)
        }
    }

    /// The fault thread gives up (out of memory past --max-resident): it must release the
    /// blocked vCPU so the run ends with the pager's reason, long before the timeout.
    ///
    /// The cap holds exactly: never a page more (counting the 64 KiB ROM), whatever the
    /// fault-around window, and the host agrees (mincore) — the guest cannot go on
    /// touching memory the kernel would supply after the pager stopped.
    @Test(arguments: [UInt64(4096), 64 << 10, 2 << 20])
    func pagerFailureDoesNotHangTheVCPU(faultAround: UInt64) throws {
        let cap: UInt64 = 4 << 20
        let r = try runGuest("memtest") { c in
            c.memorySize = 32 << 20
            c.maxResident = cap
            c.faultAround = faultAround
            c.timeout = 60
        }
        guard case let .pagerFailure(message) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(message.contains("out of memory"))
        #expect(r.statistics.runSeconds < 30)
        #expect(r.statistics.populatedBytes + VMConfig.romSize <= cap)
        #expect(r.residencyMismatches == 0)
    }

    /// In a process of its own (an exit test): the suites `swift test` runs alongside open
    /// and close descriptors of their own in this one.
    @Test func runsLeakNoFileDescriptors() async {
        await #expect(processExitsWith: .success) {
            _ = try runGuest("hello")
            let before = openFDCount()
            for g in ["hello", "outside", "triple"] { _ = try runGuest(g) }
            #expect(openFDCount() == before)
        }
    }
}

/// Bad input: typed errors naming the value, never a crash.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here"), .serialized)
struct BadInputTests {
    func error(_ configure: (inout VMConfig) -> Void) -> String {
        do {
            _ = try runGuest("hello", configure)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func missingEmptyAndMalformedGuests() throws {
        #expect(error { $0.guestPath = "/nonexistent/guest.bin" } == "guest image /nonexistent/guest.bin: no such file")
        let empty = "/tmp/axvm-empty-\(getpid()).bin"
        let f = fopen(empty, "w"); fclose(f)
        defer { unlink(empty) }
        #expect(error { $0.guestPath = empty } == "guest image \(empty): file is empty")
        #expect(error { $0.guestPath = "/etc/hostname" }.contains("not an axvm guest"))
        #expect(error { $0.guestPath = "/tmp" }.contains("not a regular file"))
    }

    @Test func boundedOptions() {
        #expect(error { $0.timeout = .infinity }.contains("timeout inf: must be a number of seconds above 0 and at most 604800"))
        #expect(error { $0.timeout = 1e300 }.contains("timeout 1e+300"))
        #expect(error { $0.timeout = 2e10 }.contains("timeout 2"))
        #expect(error { $0.timeout = .nan }.contains("timeout nan"))
        #expect(error { $0.stridePages = .max }.contains("stride 18446744073709551615"))
        #expect(error { $0.stridePages = 0 }.contains("stride 0"))
        #expect(error { $0.lazy = false; $0.maxResident = 8 << 20 }.contains("below the 16777216 bytes (16 MiB) of RAM that --populate maps"))
    }

    @Test func fifoAsGuestImageFailsAtOnce() throws {
        let fifo = "/tmp/axvm-fifo-\(getpid())"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(error { $0.guestPath = fifo } == "guest image \(fifo): not a regular file")
    }

    @Test func badSizes() {
        #expect(error { $0.memorySize = (16 << 20) + 1 } == "memory size 16777217 (0x1000001): not a multiple of 4 KiB")
        #expect(error { $0.memorySize = 1 << 40 }.contains("above the 64 GiB maximum"))
        #expect(error { $0.memorySize = 1 << 20 }.contains("below the 4 MiB minimum"))
        #expect(error { $0.faultAround = 12288 }.contains("fault-around 12288"))
        #expect(error { $0.testSize = 64 << 20 }.contains("test size"))
    }

    @Test func noKVMDevice() {
        #expect(error { $0.kvmPath = "/nonexistent/kvm" }
            == "/nonexistent/kvm does not exist: KVM is not available on this host (No such file or directory)")
    }
}

import Glibc

/// The command line, as a user runs it: a real process, a real SIGINT.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here"), .serialized)
struct CommandLineTests {
    /// The axvm binary `swift build` put next to the tests (any scratch path).
    var axvm: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]) + "/axvm"
    }

    /// Runs axvm with `args`, optionally sends SIGINT after `interruptAfter` seconds;
    /// returns the exit status, or minus the signal number if a signal killed it.
    func run(_ args: [String], interruptAfter: Double? = nil) throws -> Int32 {
        try #require(access(axvm, X_OK) == 0, "\(axvm) missing: run swift build first")
        var pid = pid_t()
        let argv = ([axvm] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let r = posix_spawn(&pid, axvm, nil, nil, argv, environ)
        try #require(r == 0, "posix_spawn: \(r)")
        if let t = interruptAfter {
            usleep(UInt32(t * 1_000_000))
            kill(pid, SIGINT)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
    }

    @Test func ctrlCStopsTheGuestCleanly() throws {
        // The guest spins forever; SIGINT must end it through the run loop: a normal exit
        // with status 130, not a process killed by the signal.
        let status = try run(["run", guestPath("spin"), "--timeout", "60"], interruptAfter: 1.5)
        #expect(status == 130)
    }

    @Test func exitStatusIsTheGuestsCode() throws {
        #expect(try run(["run", guestPath("hello")]) == 0)
        #expect(try run(["run", guestPath("outside")]) == 3)
        #expect(try run(["run", guestPath("spin"), "--timeout", "0.5"]) == 124)
        #expect(try run(["run", "/nonexistent.bin"]) == 2)
        #expect(try run(["run", guestPath("hello"), "--memory", "5000"]) == 64)
        #expect(try run(["run", guestPath("hello"), "--timeout", "inf"]) == 64)
        #expect(try run(["run", guestPath("hello"), "--timeout", "1e300"]) == 64)
        #expect(try run(["run", guestPath("memtest"), "--stride", "18446744073709551615"]) == 64)
        #expect(try run(["run", guestPath("halt")]) == 4)
    }

    /// The statistics file is checked before the guest runs: a FIFO would block, /dev/full
    /// would lose the data. Both fail at once with status 2; a regular file gets the JSON.
    @Test func statsJSONMustBeAWritableRegularFile() throws {
        let fifo = "/tmp/axvm-json-fifo-\(getpid())"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let t0 = monotonicSeconds()
        #expect(try run(["run", guestPath("hello"), "--stats-json", fifo]) == 2)
        #expect(monotonicSeconds() - t0 < 10)
        #expect(try run(["run", guestPath("hello"), "--stats-json", "/dev/full"]) == 2)
        #expect(try run(["run", guestPath("hello"), "--stats-json", "/nonexistent/dir/x.json"]) == 2)
        let path = "/tmp/axvm-json-\(getpid()).json"
        defer { unlink(path) }
        #expect(try run(["run", guestPath("hello"), "--stats-json", path]) == 0)
        let text = try #require(readFile(path))
        #expect(text.hasPrefix("{") && text.contains("\"exit_status\": 0") && text.hasSuffix("}\n"))
    }

    /// A real Ctrl-C: axvm is the foreground process of a pseudo-terminal (its own session,
    /// the pty as controlling terminal, SIGINT unblocked and at its default action, as in an
    /// interactive shell), and ^C is typed into the terminal. The kernel then sends SIGINT
    /// to the process and may pick any thread that does not block it: axvm must still end
    /// through its run loop — exit status 130, statistics printed — not die by the signal.
    @Test func ctrlCOnATerminalEndsTheRunCleanly() throws {
        try #require(access(axvm, X_OK) == 0)
        var name = [CChar](repeating: 0, count: 128)
        let master = ckvm_open_pty(&name, name.count)
        try #require(master >= 0)
        defer { close(master) }
        let slave = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), defaults = sigset_t()
        sigemptyset(&empty)
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        // POSIX_SPAWN_SETSID (0x80, glibc 2.26): setsid() runs before the file actions, so
        // opening the pty below makes it the session's controlling terminal.
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | 0x80))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, slave, O_RDWR, 0)
        posix_spawn_file_actions_adddup2(&actions, 0, 1)
        posix_spawn_file_actions_adddup2(&actions, 0, 2)

        let args = [axvm, "run", guestPath("spin"), "--timeout", "60", "--stats"]
        let argv = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        try #require(posix_spawn(&pid, axvm, &actions, &attr, argv, environ) == 0)

        // Let the guest run (the VMM set up, the spin loop going), then type ^C.
        var output = ""
        let t0 = monotonicSeconds()
        while monotonicSeconds() - t0 < 1.5 { output += drain(master, wait: 0.1) }
        var ctrlC: UInt8 = 3
        #expect(write(master, &ctrlC, 1) == 1)
        var status: Int32 = 0
        var waited: pid_t = 0
        while waited == 0 && monotonicSeconds() - t0 < 40 {
            output += drain(master, wait: 0.1)
            waited = waitpid(pid, &status, WNOHANG)
        }
        if waited == 0 { kill(pid, SIGKILL); waitpid(pid, &status, 0) }
        output += drain(master, wait: 0.1)
        #expect(waited == pid, "axvm did not end after ^C")
        #expect(status & 0x7f == 0, "killed by signal \(status & 0x7f): \(output)")
        #expect((status >> 8) & 0xff == 130, "\(output)")
        #expect(output.contains("interrupted by SIGINT (Ctrl-C)"), "\(output)")
        #expect(output.contains("vCPU exits:"), "statistics missing: \(output)")
    }

    /// What the terminal has for us within `wait` seconds.
    func drain(_ fd: Int32, wait: Double) -> String {
        var out: [UInt8] = []
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var timeout = Int32(wait * 1000)
        while poll(&p, 1, timeout) > 0 {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
            timeout = 0
        }
        return String(decoding: out, as: UTF8.self)
    }
}
