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

    /// Serves a memtest guest's port access; MMIO is nobody's here.
    static func memtest(_ access: DeviceAccess, serial: Serial) -> DeviceAction {
        guard case let .io(port, isOut, data) = access else { return .unhandled }
        if isOut {
            switch port {
            case serialData: serial.out(data)
            case debugExit: return .exit(data.first ?? 0)
            case reclaim: return .reclaim
            default: return .unhandled  // writes to absent devices are dropped, as on a bus
            }
            return .handled
        }
        // Reads: the serial line status says "ready"; absent devices float high.
        guard port == serialLineStatus else { return .unhandled }
        for i in 0..<data.count { data[i] = serial.lineStatus }
        return .handled
    }
}
