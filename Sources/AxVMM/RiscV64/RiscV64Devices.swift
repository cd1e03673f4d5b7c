import AxAddrSpace

/// The riscv64 guests' MMIO devices (guests/riscv64/defs.inc).
enum RiscV64Devices {
    /// The memtest guests' devices on MMIO; their empty registers read 0.
    static func attachMemtest(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        // The console's data register at its base; everything else reads 0.
        try buses.mmio.register(MemtestConsole(serial: serial, statusOffset: nil, empty: 0, wideWrites: false),
                                name: "memtest UART", at: RiscV64Layout.uart, size: RiscV64Layout.uartSize)
        try buses.mmio.register(MemtestExit(empty: 0), name: "memtest exit", at: RiscV64Layout.exitDevice, size: 1)
        try buses.mmio.register(MemtestReclaim(empty: 0, reclaim: reclaim), name: "memtest reclaim", at: RiscV64Layout.reclaimDevice, size: 1)
    }
}
