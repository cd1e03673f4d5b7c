// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
/// The i8042 keyboard controller, only as far as Linux uses it without a keyboard: its
/// probe (self-test, command byte) passes, and command 0xFE (pulse the reset line, what
/// `reboot=k` does) ends the VM. Ports 0x60 (data) and 0x64 (status/command).
final class I8042 {
    static let dataPort: UInt16 = 0x60
    static let commandPort: UInt16 = 0x64

    private var output: [UInt8] = []
    private var commandByte: UInt8 = 0x45     // keyboard interrupt, system flag, translate
    /// A command whose parameter comes through the data port.
    private var pendingWrite: UInt8?
    /// The guest pulsed the CPU reset line.
    private(set) var resetRequested = false

    /// For a snapshot: the command byte, the pending command (0: none) and the output queue.
    var state: [UInt8] { [commandByte, pendingWrite ?? 0] + output }
    func restore(_ s: [UInt8]) {
        guard s.count >= 2 else { return }
        commandByte = s[0]
        pendingWrite = s[1] == 0 ? nil : s[1]
        output = Array(s.dropFirst(2).prefix(16))
    }

    func read(port: UInt16) -> UInt8 {
        if port == Self.dataPort { return output.isEmpty ? 0 : output.removeFirst() }
        // Status: bit 0 output buffer full, bit 2 system flag; input buffer always empty.
        return (output.isEmpty ? 0 : 0x01) | 0x04
    }

    func write(port: UInt16, _ value: UInt8) {
        if port == Self.dataPort {
            if pendingWrite == 0x60 { commandByte = value }
            pendingWrite = nil
            return
        }
        switch value {
        case 0x20: output.append(commandByte)            // read command byte
        case 0x60, 0xd1, 0xd2, 0xd3, 0xd4: pendingWrite = value
        case 0xaa: output.append(0x55)                   // controller self-test passed
        case 0xa9, 0xab: output.append(0x00)             // interface tests passed
        case 0xfe: resetRequested = true                 // pulse reset
        default: break                                   // enable/disable ports and the like
        }
    }
}
#endif
