import AxAddrSpace

/// The AArch64 guests' MMIO devices (guests/aarch64/defs.inc).
enum AArch64Devices {
    /// The memtest guests' devices on MMIO; their empty registers read 0.
    static func attachMemtest(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        // The UART's data register at its base (DR); FR and the rest read 0: never busy, never full.
        try buses.mmio.register(MemtestConsole(serial: serial, statusOffset: nil, empty: 0, wideWrites: false),
                                name: "memtest UART", at: AArch64Layout.uart, size: AArch64Layout.uartSize)
        try buses.mmio.register(MemtestExit(empty: 0), name: "memtest exit", at: AArch64Layout.exitDevice, size: 1)
        try buses.mmio.register(MemtestReclaim(empty: 0, reclaim: reclaim), name: "memtest reclaim", at: AArch64Layout.reclaimDevice, size: 1)
    }
}
