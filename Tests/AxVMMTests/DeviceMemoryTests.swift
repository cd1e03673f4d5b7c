import AxAddrSpace
@testable import AxVMM
import Glibc
import KVM
import Synchronization
import Testing

/// Guest RAM as devices see it (`GuestMemory.deviceAccess`), on a real VM's memory: every
/// (address, length) checked against RAM, lazy pages populated through the library, the
/// device's writes recorded for diff snapshots.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"))
struct DeviceMemoryTests {
    /// A VM with 8 MiB of lazy, dirty-logged RAM at 0, another MiB at 16 MiB and a ROM above.
    static func memory() throws -> (GuestMemory<NPT>, [RAMRegion]) {
        let vm = try KVMSystem().createVM()
        let m = try GuestMemory(vm: vm, format: NPT(), hostCapacity: 512 << 20, spaceSize: 1 << 32)
        let a = try m.addRAM(at: GuestPhysAddr(0), size: 8 << 20, lazy: true, logDirty: true)
        let b = try m.addRAM(at: GuestPhysAddr(16 << 20), size: 1 << 20, lazy: true)
        _ = try m.addRAM(at: GuestPhysAddr(0xe000_0000), size: 0x1_0000, lazy: false, readOnly: true)
        return (m, [a, b])
    }

    @Test func outsideRAMIsRefusedAndNothingIsTouched() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        var buf = [UInt8](repeating: 0xaa, count: 64)
        let cases: [(UInt64, Int)] = [((8 << 20) - 32, 64), (8 << 20, 1), (0xe000_0000, 4), ((16 << 20) + (1 << 20) - 1, 2),
                                      (UInt64.max - 8, 64), (12 << 20, 16)]
        for (gpa, n) in cases {
            do {
                try buf.withUnsafeMutableBytes { try d.read(gpa, UnsafeMutableRawBufferPointer(rebasing: $0[..<n])) }
                Issue.record("read of \(n) at 0x\(String(gpa, radix: 16)) allowed")
            } catch {
                #expect(error as? DeviceMemoryError == .outsideRAM(gpa: gpa, length: UInt64(n)))
            }
            #expect(throws: DeviceMemoryError.self) { try buf.withUnsafeBytes { try d.write(gpa, UnsafeRawBufferPointer(rebasing: $0[..<n])) } }
        }
        #expect(buf.allSatisfy { $0 == 0xaa })
        #expect(ram.allSatisfy { m.populatedBytes($0) == 0 }, "a refused access populated memory")
    }

    @Test func lazyPagesComeInAndWritesAreRecorded() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        // Across a page boundary: two lazy pages populated, written, read back.
        let data = (0..<600).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try data.withUnsafeBytes { try d.write(0x2000 - 300, $0) }
        #expect(m.populatedBytes(ram[0]) == 2 * 4096)
        var back = [UInt8](repeating: 0, count: 600)
        try back.withUnsafeMutableBytes { try d.read(0x2000 - 300, $0) }
        #expect(back == data)
        // What a guest read would see: the library's view (GuestMemory.read goes through it).
        #expect(try m.read(GuestPhysAddr(0x2000 - 300), as: UInt8.self) == data[0])
        // A read populates too (a zero page), and is not a write.
        var z = [UInt8](repeating: 1, count: 8)
        try z.withUnsafeMutableBytes { try d.read(0x5000, $0) }
        #expect(z == [UInt8](repeating: 0, count: 8))
        #expect(m.populatedBytes(ram[0]) == 3 * 4096)
        // The device's writes are in the next dirty log (pages 1 and 2), the read is not.
        let dirty = try #require(try m.dirtyPages(ram[0]))
        #expect(dirty[0] & 0b111110 == 0b110, "dirty bits \(String(dirty[0], radix: 2))")
        #expect(try #require(try m.dirtyPages(ram[0]))[0] & 0b110 == 0, "recorded once")
        #expect(ram.allSatisfy { m.residencyMismatches($0).isEmpty })
    }

    /// `direct`: guest RAM itself in contiguous pieces (a file's pread and pwrite go straight
    /// there), checked, populated and recorded as the copies are, and stopped by its body.
    @Test func directPiecesAreGuestRAMItself() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        // 5 pages and a bit, from the middle of a page: every byte of the range, once, in order.
        let gpa: UInt64 = 0x10000 + 100, count = 5 * 4096 + 200
        var seen = 0, pieces = 0
        let whole = try d.direct(gpa, count, true) { piece in
            #expect(piece.count > 0)
            for i in 0..<piece.count { piece[i] = UInt8(truncatingIfNeeded: (seen + i) &* 13) }
            seen += piece.count
            pieces += 1
            return true
        }
        #expect(whole && seen == count && pieces >= 1 && pieces <= 7)
        var back = [UInt8](repeating: 0, count: count)
        try back.withUnsafeMutableBytes { try d.read(gpa, $0) }
        #expect(back == (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        #expect(m.populatedBytes(ram[0]) == 6 * 4096)
        // The written pages (16 to 21) are in the dirty log; a read through `direct` is not a write.
        // (A reader reads the piece, as a file's pwrite does: mincore counts a page once touched.)
        #expect(try d.direct(0x40000, 10, false) { piece in piece.allSatisfy { $0 == 0 } })
        let dirty = try #require(try m.dirtyPages(ram[0]))
        #expect(dirty[0] >> 16 & 0b111111 == 0b111111 && dirty[1] == 0, "dirty words \(dirty[0]), \(dirty[1])")
        // A body that stops: no later piece, the answer false.
        var calls = 0
        #expect(try d.direct(gpa, count, false) { _ in calls += 1; return false } == false)
        #expect(calls == 1)
        // Outside RAM: refused before any piece.
        #expect(throws: DeviceMemoryError.outsideRAM(gpa: (8 << 20) - 10, length: 20)) {
            _ = try d.direct((8 << 20) - 10, 20, true) { _ in Issue.record("a piece outside RAM"); return true }
        }
        #expect(ram.allSatisfy { m.residencyMismatches($0).isEmpty }, "\(ram.map { m.residencyMismatches($0) })")
        #expect(m.populatedBytes(ram[0]) == 7 * 4096)
    }

    /// What virtio-balloon gives back (`returnToHost`): only RAM, the populated bytes counted,
    /// the frames punched (mincore agrees), and a fault that maps one again is a re-fault once.
    @Test func returnedPagesAreCountedWhenTheyComeBack() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        try [UInt8](repeating: 7, count: 3 * 4096).withUnsafeBytes { try d.write(0x100000, $0) }
        #expect(m.populatedBytes(ram[0]) == 3 * 4096)
        // 8 pages given back, 3 of them populated.
        #expect(try m.returnToHost(0x100000, size: 8 * 4096) == 3 * 4096)
        #expect(m.populatedBytes(ram[0]) == 0)
        #expect(ram.allSatisfy { m.residencyMismatches($0).isEmpty })
        #expect(try m.returnToHost(0x100000, size: 8 * 4096) == 0, "nothing left to give")
        // The ROM, the hole between the areas and a wrapping range are refused.
        for (gpa, size) in [(UInt64(0xe000_0000), UInt64(4096)), (12 << 20, 4096), (UInt64.max - 4095, 8192)] {
            #expect(throws: DeviceMemoryError.outsideRAM(gpa: gpa, length: size)) { try m.returnToHost(gpa, size: size) }
        }
        // A mapping over the range takes the 3 returned pages back once.
        let range = GuestPhysRange(start: GuestPhysAddr(0x100000 - 4096), end: GuestPhysAddr(0x100000 + 16 * 4096))
        #expect(m.takeReturned(range) == 3)
        #expect(m.takeReturned(range) == 0)
        var back = [UInt8](repeating: 1, count: 4096)
        try back.withUnsafeMutableBytes { try d.read(0x100000, $0) }
        #expect(back.allSatisfy { $0 == 0 })
    }

    /// Pages given back while a device writes and reads them, from two threads: each page
    /// reads back whole (the device's pattern) or as zeros (given back in between), never
    /// torn; at the end the library and mincore agree. ThreadSanitizer runs it too.
    @Test func returnsRacingDeviceAccessesNeverTearAPage() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        final class Flag: Sendable { let stop = Atomic<Bool>(false); let torn = Atomic<Int>(0) }
        let flag = Flag()
        let pages: UInt64 = 64
        let returner = try OSThread(.helper, name: "axvm-test") {
            var seed: UInt64 = 0x1234_5678
            while !flag.stop.load(ordering: .acquiring) {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                let first = (seed >> 33) % pages, count = 1 + (seed >> 20) % 4
                _ = try? m.returnToHost(0x200000 + first * 4096, size: min(count, pages - first) * 4096)
            }
        }
        let writer = try OSThread(.helper, name: "axvm-test") {
            var page = [UInt8](repeating: 0, count: 4096)
            for round in 0..<3000 {
                let p = UInt64(round) % pages
                let mark = UInt8(truncatingIfNeeded: round | 1)
                page = [UInt8](repeating: mark, count: 4096)
                _ = try? page.withUnsafeBytes { try d.write(0x200000 + p * 4096, $0) }
                _ = try? page.withUnsafeMutableBytes { try d.read(0x200000 + p * 4096, $0) }
                if !(page.allSatisfy { $0 == mark } || page.allSatisfy { $0 == 0 }) { flag.torn.add(1, ordering: .relaxed) }
            }
            flag.stop.store(true, ordering: .releasing)
        }
        writer.join()
        returner.join()
        #expect(flag.torn.load(ordering: .acquiring) == 0)
        #expect(ram.allSatisfy { m.residencyMismatches($0).isEmpty })
    }

    @Test func aReclaimedPageComesBackAsZeros() throws {
        let (m, ram) = try Self.memory()
        let d = m.deviceAccess
        try [UInt8](repeating: 9, count: 4096).withUnsafeBytes { try d.write(16 << 20, $0) }
        try m.reclaim(GuestPhysAddr(16 << 20), size: 4096)
        #expect(m.populatedBytes(ram[1]) == 0)
        var back = [UInt8](repeating: 1, count: 4096)
        try back.withUnsafeMutableBytes { try d.read(16 << 20, $0) }
        #expect(back.allSatisfy { $0 == 0 })
        #expect(m.residencyMismatches(ram[1]).isEmpty)
    }
}
