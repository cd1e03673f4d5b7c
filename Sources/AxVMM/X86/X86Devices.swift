/// The memtest guests' devices on x86 I/O ports (guests/defs.inc is the guest's side).
/// (Linux's PC devices — `UART8250`, `I8042`, `IRQResampler`, `MPTable` — are attached by
/// `LinuxLoader`.)
enum X86Devices {
    /// 8250 UART at COM1: 0x3f8 data, 0x3fd line status.
    static let serialData: UInt16 = 0x3f8
    static let serialLineStatus: UInt16 = 0x3fd
    /// Debug exit: the byte written is the guest's exit code (like QEMU's isa-debug-exit,
    /// without its shift).
    static let debugExit: UInt16 = 0xf4
    /// Hypercall: "reclaim the test region" — the VMM depopulates it so that the next
    /// touch faults again and reads zeros.
    static let reclaim: UInt16 = 0xf5

    /// The memtest guests' devices on I/O ports; reads of their empty registers float high
    /// (0xff), as absent devices do.
    static func attachMemtest(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try buses.pio.register(MemtestConsole(serial: serial, statusOffset: UInt64(serialLineStatus - serialData), empty: 0xff,
                                              wideWrites: true), name: "memtest console", at: UInt64(serialData), size: 8)
        try buses.pio.register(MemtestExit(empty: 0xff), name: "memtest exit", at: UInt64(debugExit), size: 1)
        try buses.pio.register(MemtestReclaim(empty: 0xff, reclaim: reclaim), name: "memtest reclaim", at: UInt64(Self.reclaim), size: 1)
    }
}
