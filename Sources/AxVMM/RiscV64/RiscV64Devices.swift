import AxAddrSpace

/// The riscv64 guests' MMIO devices (guests/riscv64/defs.inc).
enum RiscV64Devices {
    /// The memtest guests' devices: the console's data register at its base.
    static func attachMemtest(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try attachMemtestMMIO(&buses, serial: serial, reclaim: reclaim, uart: RiscV64Layout.uart, uartSize: RiscV64Layout.uartSize,
                              exit: RiscV64Layout.exitDevice, reclaimAt: RiscV64Layout.reclaimDevice)
    }
}
