@testable import AxVMM
import Synchronization
import Testing

/// A count shared with a device's closures.
final class Counter: Sendable {
    private let n = Atomic<Int>(0)
    func add() { n.add(1, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

/// A device that records the offsets it was asked for.
final class RecordingDevice: BusDevice {
    let offsets = Mutex<[UInt64]>([])
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        offsets.withLock { $0.append(offset) }
        data.fill(UInt8(truncatingIfNeeded: offset))
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        offsets.withLock { $0.append(offset) }
        return .handled
    }
}

/// The device buses: registration refuses overlaps naming both devices, and every address
/// reaches the one device whose range holds it, at its offset, or none.
struct DeviceBusTests {
    @Test func overlapsAreRefusedNamingBoth() throws {
        var bus = DeviceBus(space: "MMIO")
        try bus.register(RecordingDevice(), name: "uart", at: 0x1000, size: 0x100)
        try bus.register(RecordingDevice(), name: "disk", at: 0x1100, size: 0x200)  // adjacent: fine
        try bus.register(RecordingDevice(), name: "rng", at: 0x800, size: 0x800)
        for (base, size) in [(UInt64(0x10ff), UInt64(1)), (0xf00, 0x200), (0x1000, 0x1000), (0x12ff, 4), (0x0, 0x801)] {
            do {
                try bus.register(RecordingDevice(), name: "intruder", at: base, size: size)
                Issue.record("[\(base), +\(size)) registered over another device")
            } catch {
                #expect("\(error)".contains("intruder") && "\(error)".contains("overlaps"), "\(error)")
            }
        }
        #expect(throws: VMMError.self) { try bus.register(RecordingDevice(), name: "empty", at: 0x5000, size: 0) }
        #expect(throws: VMMError.self) { try bus.register(RecordingDevice(), name: "wraps", at: UInt64.max - 1, size: 4) }
        #expect(bus.entries.map(\.name) == ["rng", "uart", "disk"])
    }

    @Test func accessesReachTheirDeviceAtTheirOffset() throws {
        var bus = DeviceBus(space: "port I/O")
        let a = RecordingDevice(), b = RecordingDevice()
        try bus.register(a, name: "a", at: 0x60, size: 1)
        try bus.register(b, name: "b", at: 0x3f8, size: 8)
        var byte: UInt8 = 0
        withUnsafeMutableBytes(of: &byte) { d in
            for port: UInt64 in [0x5f, 0x61, 0x3f7, 0x400, 0, .max] { #expect(bus.read(port, d, vcpu: 0) == nil, "port \(port)") }
            #expect(bus.read(0x60, d, vcpu: 0) != nil)
            #expect(bus.read(0x3fd, d, vcpu: 0) != nil)
            #expect(d[0] == 5)
            #expect(bus.write(0x3ff, UnsafeRawBufferPointer(d), vcpu: 0) != nil)
        }
        #expect(a.offsets.withLock { $0 } == [0])
        #expect(b.offsets.withLock { $0 } == [5, 7])
    }
}
