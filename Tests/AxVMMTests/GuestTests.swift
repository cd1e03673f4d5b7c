import AxAddrSpace
import AxVMM
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
            #expect(r.checksum == expected, "lazy \(lazy)")
            #expect(r.mismatches == 0)
            #expect(r.pagesTouched == (size - VMConfig.testBase) / 4096)
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
    /// boot data and code, which KVM may touch itself — at most three windows.
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
        #expect(r.statistics.faults - r.statistics.faultsInTestRegion <= 3)
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
        #expect(r.checksum == expectedChecksum(base: VMConfig.testBase, size: size - VMConfig.testBase, seed: 3))
        #expect(UInt64(r.statistics.faultsInTestRegion) == (size - VMConfig.testBase) / 4096)
        #expect(r.residencyMismatches == 0)
    }

    @Test func reclaimedPagesFaultAgainAndReadZero() throws {
        let r = try runGuest("retouch")
        #expect(r.exit == .guestExit(code: 0), "\(r.serialOutput)")
        #expect(r.mismatches == 0)
        let pages = (16 << 20 - VMConfig.testBase) / 4096
        #expect(UInt64(r.statistics.faultsInTestRegion) == 2 * pages)
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
        #expect(gpa == VMConfig.romBase)
    }

    @Test func guestThatNeverExitsTimesOut() throws {
        let r = try runGuest("spin") { $0.timeout = 0.5 }
        guard case .timeout = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(r.exitStatus == 124)
    }

    @Test func tripleFaultIsReportedWithRegisters() throws {
        let r = try runGuest("triple")
        guard case let .shutdown(_, _, cr0, cr3) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(cr3 == 0x9000 && cr0 & 0x8000_0001 == 0x8000_0001)
    }

    /// The fault thread gives up (out of memory past --max-resident): it must release the
    /// blocked vCPU so the run ends with the pager's reason, long before the timeout.
    @Test func pagerFailureDoesNotHangTheVCPU() throws {
        let r = try runGuest("memtest") { c in
            c.maxResident = 4 << 20
            c.timeout = 60
        }
        guard case let .pagerFailure(message) = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(message.contains("out of memory"))
        #expect(r.statistics.runSeconds < 30)
        #expect(r.statistics.populatedBytes <= 4 << 20)
    }

    @Test func runsLeakNoFileDescriptors() throws {
        _ = try runGuest("hello")
        let before = openFDCount()
        for g in ["hello", "outside", "triple"] { _ = try runGuest(g) }
        #expect(openFDCount() == before)
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
    /// The axvm binary `swift build` put next to the tests.
    var axvm: String {
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        return "/" + root + "/.build/debug/axvm"
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
        #expect(try run(["run", guestPath("hello"), "--memory", "5000"]) == 2)
    }
}
