import AxAddrSpace

/// The AArch64 guests' MMIO devices (guests/aarch64/defs.inc).
enum AArch64Devices {
    /// Serves a memtest guest's MMIO access if a device lives there (no port I/O on arm64).
    static func memtest(_ access: DeviceAccess, serial: Serial) -> DeviceAction {
        guard case let .mmio(address, isWrite, data) = access else { return .unhandled }
        let gpa = address.raw
        switch gpa {
        case AArch64Layout.uart..<(AArch64Layout.uart + AArch64Layout.uartSize):
            if isWrite {
                if gpa == AArch64Layout.uart, let b = data.first { serial.out(b) }  // DR
            } else {
                for i in 0..<data.count { data[i] = 0 }  // FR: never busy, never full; others 0
            }
            return .handled
        case AArch64Layout.exitDevice:
            return isWrite ? .exit(data.first ?? 0) : zero(data)
        case AArch64Layout.reclaimDevice:
            return isWrite ? .reclaim : zero(data)
        default:
            return .unhandled
        }
    }

    private static func zero(_ data: UnsafeMutableRawBufferPointer) -> DeviceAction {
        for i in 0..<data.count { data[i] = 0 }
        return .handled
    }
}
