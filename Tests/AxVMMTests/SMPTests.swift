import AxAddrSpace
import AxVMM
import Testing

/// Several vCPUs faulting at once on real KVM with real userfaultfd: every combination of
/// vCPUs, fault-around, fault threads and lazy/populated, in both memtest modes. The
/// checksums are worked out here; "no page twice" is the library's own count: every
/// populated RAM page was mapped by exactly one fault (the frame count equals the pages
/// mapped), and the host (mincore) agrees page by page.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct SMPTests {
    static let memory: UInt64 = 16 << 20
    static let romPages = Int(VMConfig.romSize / 4096)

    @Test(arguments: [2, 4, 8], GuestParams.Mode.allCases)
    func concurrentFaultsKeepEveryPageOnce(vcpus: Int, mode: GuestParams.Mode) throws {
        let expected = expectedChecksum(base: VMConfig.testBase, size: Self.memory - VMConfig.testBase, seed: 5)
        for faultAround: UInt64 in [4096, 64 << 10, 2 << 20] {
            for threads in [1, 2] {
                for lazy in [true, false] {
                    let what = "\(vcpus) vCPUs \(mode) fault-around \(faultAround) \(threads) thread(s) \(lazy ? "lazy" : "populated")"
                    let r = try runGuest("memtest") { c in
                        c.memorySize = Self.memory
                        c.vcpus = vcpus
                        c.memtestMode = mode
                        c.faultAround = faultAround
                        c.faultThreads = threads
                        c.lazy = lazy
                        c.testOrder = .random
                        c.seed = 5
                    }
                    #expect(r.exit == .guestExit(code: 0), "\(what): \(r.exit)")
                    #expect(r.memtest?.checksum == expected, "\(what)")
                    #expect(r.memtest?.mismatches == 0, "\(what)")
                    #expect(r.memtest?.vcpuChecksums.count == vcpus, "\(what)")
                    if mode == .overlap {
                        #expect(r.memtest?.vcpuChecksums.allSatisfy { $0 == expected } == true, "\(what): \(String(describing: r.memtest?.vcpuChecksums))")
                    }
                    let s = r.statistics
                    #expect(r.residencyMismatches == 0, "\(what)")
                    #expect(s.addrSpace.populatedFrames == Int(s.populatedBytes / 4096) + Self.romPages, "\(what)")
                    if lazy {
                        #expect(s.addrSpace.pagesMappedByFaults == Int(s.populatedBytes / 4096), "\(what): a page mapped twice?")
                    } else {
                        #expect(s.faults == 0, "\(what)")
                    }
                    #expect(s.vcpus.count == vcpus && s.faultThreads.count == threads, "\(what)")
                    #expect(s.faultThreads.reduce(0) { $0 + $1.faults } == s.faults, "\(what)")
                }
            }
        }
    }

    /// Reclaim while the other vCPUs fill and read: each vCPU reclaims the whole test
    /// region twice while others are mid-way; every vCPU still reads zeros after its own
    /// reclaim, and the library and the host agree at the end.
    @Test(arguments: [true, false])
    func reclaimWithSeveralVCPUs(lazy: Bool) throws {
        for threads in [1, 2] {
            let r = try runGuest("retouch") { c in
                c.vcpus = 4
                c.faultThreads = threads
                c.lazy = lazy
            }
            #expect(r.exit == .guestExit(code: 0), "\(threads) thread(s): \(r.exit) \(r.serialOutput)")
            #expect(r.memtest?.mismatches == 0)
            #expect(r.residencyMismatches == 0)
            #expect(r.statistics.addrSpace.populatedFrames == Int(r.statistics.populatedBytes / 4096) + Self.romPages)
        }
    }

    /// An end of the VM stops every vCPU: a fault on all of them, and a timeout of three
    /// spinning vCPUs (the run ends at once, not when each would notice).
    @Test func oneEndStopsEveryVCPU() throws {
        let r = try runGuest("outside") { $0.vcpus = 3 }
        guard case .unmappedAccess = r.exit else {
            Issue.record("unexpected \(r.exit)")
            return
        }
        #expect(r.statistics.vcpus.count == 3)
        let spin = try runGuest("spin") { $0.vcpus = 3; $0.timeout = 0.5 }
        guard case .timeout = spin.exit else {
            Issue.record("unexpected \(spin.exit)")
            return
        }
        #expect(spin.statistics.runSeconds < 5)
        #expect(spin.statistics.vcpus.allSatisfy { $0.exits >= 1 })
    }

    @Test func vcpuCountIsBounded() {
        var c = VMConfig(guestPath: guestPath("hello"))
        c.vcpus = 0
        #expect(throws: VMMError.self) { try Machine.validate(c) }
        c.vcpus = 65
        #expect(throws: VMMError.self) { try Machine.validate(c) }
        c.vcpus = 2
        c.faultThreads = 0
        #expect(throws: VMMError.self) { try Machine.validate(c) }
    }
}
