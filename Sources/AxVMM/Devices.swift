/// The few devices the guests need, on x86 I/O ports.
enum Ports {
    /// 8250 UART at COM1: 0x3f8 data, 0x3fd line status.
    static let serialData: UInt16 = 0x3f8
    static let serialLineStatus: UInt16 = 0x3fd
    /// Debug exit: the byte written is the guest's exit code (like QEMU's isa-debug-exit,
    /// without its shift).
    static let debugExit: UInt16 = 0xf4
    /// Hypercall: "reclaim the test region" — the VMM depopulates it so that the next
    /// touch faults again and reads zeros.
    static let reclaim: UInt16 = 0xf5
}

/// 8250 transmit side: bytes go to stdout and to a bounded capture (the report's
/// `serialOutput`): the first `captureLimit` bytes are kept, later ones only counted, so a
/// guest printing forever cannot grow the VMM.
final class Serial: @unchecked Sendable {  // state behind `lock`
    static let captureLimit = 1 << 20
    private let lock = Lock()
    private var captured: [UInt8] = []
    private var dropped = 0
    let toStdout: Bool
    init(toStdout: Bool) { self.toStdout = toStdout }

    /// Bytes one `out` instruction wrote (any vCPU).
    func out(_ bytes: UnsafeMutableRawBufferPointer) {
        lock.withLock {
            for b in bytes {
                if captured.count < Self.captureLimit { captured.append(b) } else { dropped += 1 }
            }
        }
        if toStdout { StandardStreams.write(1, UnsafeRawBufferPointer(bytes)) }
    }
    /// One byte (e.g. an 8250 THR write).
    func out(_ byte: UInt8) {
        var b = byte
        withUnsafeMutableBytes(of: &b) { out($0) }
    }
    /// LSR: transmitter holding register empty and transmitter empty (bits 5 and 6).
    var lineStatus: UInt8 { 0x60 }

    /// What the guest printed, with a note when the capture overflowed.
    var text: String {
        lock.withLock {
            let s = String(decoding: captured, as: UTF8.self)
            return dropped == 0 ? s : s + "\n[axvm: \(dropped) more serial bytes not kept]\n"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
