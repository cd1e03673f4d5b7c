/// The memtest guests' devices (guests/defs.inc, guests/aarch64/defs.inc): a console, an exit
/// register and a reclaim register. The platforms place them (`Platform.attachMemtestDevices`:
/// x86 I/O ports, arm64 MMIO) and say what their empty registers read.

/// A write-only console: bytes written at offset 0 go to the guest's serial log; the status
/// register (if any) reads "ready"; every other register reads `empty`.
final class MemtestConsole: BusDevice {
    private let serial: Serial
    private let statusOffset: UInt64?
    private let empty: UInt8
    /// Whether a wide write is that many characters (x86 `out`) or one in its low byte (an
    /// arm64 PL011-like data register).
    private let wideWrites: Bool
    init(serial: Serial, statusOffset: UInt64?, empty: UInt8, wideWrites: Bool) {
        self.serial = serial
        self.statusOffset = statusOffset
        self.empty = empty
        self.wideWrites = wideWrites
    }
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        data.fill(offset == statusOffset ? serial.lineStatus : empty)
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        guard offset == 0 else { return .handled }  // other registers: writes dropped
        if wideWrites { serial.out(data) } else if let b = data.first { serial.out(b) }
        return .handled
    }
}

/// The exit register: the byte written is the vCPU's exit code (like QEMU's isa-debug-exit,
/// without its shift); that vCPU is done, the others go on.
final class MemtestExit: BusDevice {
    private let empty: UInt8
    init(empty: UInt8) { self.empty = empty }
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        data.fill(empty)
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        .endVCPU(.exited(data.first ?? 0))
    }
}

/// The reclaim register: a write asks the VMM to depopulate the test region, so the next
/// touch faults again and reads zeros (the `retouch` guest).
final class MemtestReclaim: BusDevice {
    private let empty: UInt8
    private let reclaim: @Sendable () throws(VMMError) -> Void
    init(empty: UInt8, reclaim: @escaping @Sendable () throws(VMMError) -> Void) {
        self.empty = empty
        self.reclaim = reclaim
    }
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        data.fill(empty)
        return .handled
    }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        do { try reclaim() } catch { return .fail(error) }
        return .handled
    }
}

/// The memtest guests' devices on MMIO (arm64, riscv64): the console's data register at
/// `uart` (every register reads 0: never busy), the exit and the reclaim registers.
func attachMemtestMMIO(_ buses: inout DeviceBuses, serial: Serial, reclaim: @escaping @Sendable () throws(VMMError) -> Void,
                       uart: UInt64, uartSize: UInt64, exit: UInt64, reclaimAt: UInt64) throws(VMMError) {
    try buses.mmio.register(MemtestConsole(serial: serial, statusOffset: nil, empty: 0, wideWrites: false),
                            name: "memtest UART", at: uart, size: uartSize)
    try buses.mmio.register(MemtestExit(empty: 0), name: "memtest exit", at: exit, size: 1)
    try buses.mmio.register(MemtestReclaim(empty: 0, reclaim: reclaim), name: "memtest reclaim", at: reclaimAt, size: 1)
}
