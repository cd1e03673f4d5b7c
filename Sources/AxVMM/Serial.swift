/// A guest console's output side (the memtest guests' 8250 or PL011 data register, Linux's
/// 8250): bytes go to stdout and to a bounded capture (the report's
/// `serialOutput`): the first `captureLimit` bytes are kept, later ones only counted, so a
/// guest printing forever cannot grow the VMM.
final class Serial: @unchecked Sendable {  // state behind `lock`
    static let captureLimit = 1 << 20
    private let lock = Lock()
    private var captured: [UInt8] = []
    private var dropped = 0
    let toStdout: Bool
    /// `watch`: the text looked for and what to call when it appears.
    private var watcher: MarkerMatcher?
    private var onMatch: (@Sendable () -> Void)?
    init(toStdout: Bool) { self.toStdout = toStdout }

    /// Calls `action` (on the vCPU thread that printed it) the first time the output
    /// contains `text`.
    func watch(_ text: String, _ action: @escaping @Sendable () -> Void) {
        lock.withLock {
            watcher = text.isEmpty ? nil : MarkerMatcher(text)
            onMatch = action
        }
    }

    /// Bytes one `out` instruction wrote (any vCPU).
    func out(_ bytes: UnsafeRawBufferPointer) {
        let fire: (@Sendable () -> Void)? = lock.withLock {
            var fire: (@Sendable () -> Void)?
            for b in bytes {
                if captured.count < Self.captureLimit { captured.append(b) } else { dropped += 1 }
                if watcher?.feed(b) == true {
                    fire = onMatch
                    watcher = nil
                }
            }
            return fire
        }
        if toStdout { StandardStreams.write(1, bytes) }
        fire?()
    }
    /// One byte (e.g. an 8250 THR write).
    func out(_ byte: UInt8) {
        var b = byte
        withUnsafeBytes(of: &b) { out($0) }
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
