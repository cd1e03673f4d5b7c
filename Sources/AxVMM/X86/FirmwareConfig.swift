/// QEMU's firmware configuration device through its legacy x86 ports (QEMU's
/// docs/specs/fw_cfg.rst): a 16-bit write to the selector port (0x510) chooses an item, each
/// byte read from the data port (0x511) is its next byte, and reads past its end (or of an
/// item axvm does not have) are 0. No DMA interface, no file directory, no writes: the
/// items a kernel that asks QEMU's machine about itself reads (kvm-unit-tests: the CPU
/// count, RAM size).
final class FirmwareConfig: BusDevice, @unchecked Sendable {  // state behind `lock`
    static let selectorPort: UInt16 = 0x510
    static let dataPort: UInt16 = 0x511

    /// Item keys (fw_cfg.rst, "Selector Register"; include/standard-headers/linux/qemu_fw_cfg.h).
    enum Key: UInt16 {
        case signature = 0x00, id = 0x01, ramSize = 0x03, cpuCount = 0x05, maxCPUs = 0x0f
    }

    private let items: [UInt16: [UInt8]]
    private let lock = Lock()
    private var selected: [UInt8] = []
    private var offset = 0

    /// The machine's `ram` bytes of RAM and `cpus` vCPUs.
    init(ram: UInt64, cpus: Int) {
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        items = [
            Key.signature.rawValue: Array("QEMU".utf8),
            Key.id.rawValue: le(1, 4),  // bit 0: the traditional (port) interface; no DMA
            Key.ramSize.rawValue: le(ram, 8),
            Key.cpuCount.rawValue: le(UInt64(cpus), 2),
            Key.maxCPUs.rawValue: le(UInt64(cpus), 2),
        ]
    }

    /// Offset 0 is the selector (a write of any width: its low 16 bits; the upper two of
    /// them, the write-channel and architecture bits, select nothing axvm has), offset 1 the
    /// data byte.
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        guard offset == 0, !data.isEmpty else { return .handled }  // data port writes: ignored, as QEMU does since 2.4
        let key = UInt16(data[0]) | (data.count > 1 ? UInt16(data[1]) << 8 : 0)
        lock.withLock {
            selected = items[key] ?? []
            self.offset = 0
        }
        return .handled
    }

    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        guard offset == 1 else {
            data.fill(0)
            return .handled
        }
        lock.withLock {
            for i in 0..<data.count {
                data[i] = self.offset < selected.count ? selected[self.offset] : 0
                self.offset += 1
            }
        }
        return .handled
    }
}

/// QEMU's isa-debug-exit at port 0xf4: a write ends the machine with the value written (its
/// low byte) as the guest's exit code, which is axvm's exit status. QEMU exits with
/// (code << 1) | 1 instead; kvm-unit-tests writes 0 (pass), 1 (fail) or 77 (skip).
final class DebugExit: BusDevice {
    static let port: UInt16 = 0xf4
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        data.fill(0xff)
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        .endMachine(.guestExit(code: data.first ?? 0))
    }
}

/// The interrupt lines of QEMU's pc-testdev (hw/misc/pc-testdev.c) at ports 0x2000-0x2017:
/// each byte written sets interrupt line (port - 0x2000) to its truth, a level through the
/// in-kernel PIC and IOAPIC (KVM_IRQ_LINE); a 32-bit write to 0x200b sets line 11 and lowers
/// 12-14, as QEMU's byte-wide ports do. kvm-unit-tests' ioapic and realmode tests raise
/// their interrupts here. Reads float. (The rest of pc-testdev — its scratch port, page
/// flush and MMIO window — axvm does not have: the tests that ask for it are told so.)
final class TestDeviceIRQLines: BusDevice {
    static let base: UInt16 = 0x2000
    static let count = 24
    private let setLine: @Sendable (UInt32, Bool) -> Void
    init(setLine: @escaping @Sendable (UInt32, Bool) -> Void) { self.setLine = setLine }

    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        data.fill(0xff)
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        for (i, b) in data.enumerated() where Int(offset) + i < Self.count { setLine(UInt32(Int(offset) + i), b != 0) }
        return .handled
    }
}

/// pc-testdev's MMIO window (hw/misc/pc-testdev.c, "iomem"): 64 KiB at 0xff00_0000 that read
/// back what was written, through MMIO exits (so each access is emulated by KVM: what
/// kvm-unit-tests' lam and emulator tests use to reach KVM's instruction emulator).
final class TestDeviceMemory: BusDevice, @unchecked Sendable {  // bytes behind `lock`
    static let base: UInt64 = 0xff00_0000
    static let size = 0x1_0000
    private let lock = Lock()
    private var bytes = [UInt8](repeating: 0, count: TestDeviceMemory.size)

    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        lock.withLock {
            for i in 0..<data.count { data[i] = Int(offset) + i < Self.size ? bytes[Int(offset) + i] : 0xff }
        }
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        lock.withLock {
            for (i, b) in data.enumerated() where Int(offset) + i < Self.size { bytes[Int(offset) + i] = b }
        }
        return .handled
    }
}
