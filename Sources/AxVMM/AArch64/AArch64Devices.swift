import AxAddrSpace

/// The AArch64 guests' MMIO devices (guests/aarch64/defs.inc).
enum AArch64Devices {
    /// The memtest guests' devices: a PL011-style data register (FR and the rest read 0).
    static func attachMemtest(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try attachMemtestMMIO(&buses, serial: serial, reclaim: reclaim, uart: AArch64Layout.uart, uartSize: AArch64Layout.uartSize,
                              exit: AArch64Layout.exitDevice, reclaimAt: AArch64Layout.reclaimDevice)
    }
}
