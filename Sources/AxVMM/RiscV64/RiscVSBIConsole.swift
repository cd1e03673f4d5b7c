import KVM

/// The SBI console calls KVM leaves to the VMM (SBI specification v2.0, chapters 5 and 12):
/// the legacy extensions' putchar (0x01) and getchar (0x02), and the debug console extension
/// DBCN (0x4442434E): write (a buffer in guest RAM), read (nothing to read here) and
/// write_byte. Everything the guest passes is checked: a buffer must lie in RAM (else
/// SBI_ERR_INVALID_PARAM), and one write moves at most `maxWrite` bytes (SBI lets a console
/// write part of a buffer and say how much), so a guest's length costs no more than that.
struct RiscVSBIConsole: Sendable {
    static let legacyPutchar: UInt64 = 0x01
    static let legacyGetchar: UInt64 = 0x02
    static let debugConsole: UInt64 = 0x4442_434e
    /// DBCN's functions.
    static let write: UInt64 = 0, read: UInt64 = 1, writeByte: UInt64 = 2
    /// The most one DBCN write takes from the guest's buffer.
    static let maxWrite = 4096

    /// Guest RAM for DBCN write's buffer (nil: none yet; a write is then a failure).
    var memory: DeviceMemory?

    /// The answer to `call`, or nil if it is not a console call; what the guest writes goes
    /// to `out`.
    func answer(_ call: SBICall, out: ([UInt8]) -> Void) -> FirmwareAnswer? {
        let a = call.args + [UInt64](repeating: 0, count: max(0, 3 - call.args.count))
        switch (call.extensionID, call.functionID) {
        case (Self.legacyPutchar, _):
            out([UInt8(truncatingIfNeeded: a[0])])
            return .answer(error: SBI.success, value: 0)
        case (Self.legacyGetchar, _):
            return .answer(error: -1, value: 0)  // legacy: -1 in a0, nothing pending
        case (Self.debugConsole, Self.writeByte):
            out([UInt8(truncatingIfNeeded: a[0])])
            return .answer(error: SBI.success, value: 0)
        case (Self.debugConsole, Self.read):
            // No console input: zero bytes read (the buffer checked as a write's is).
            return checkedBuffer(count: a[0], low: a[1], high: a[2]).answer ?? .answer(error: SBI.success, value: 0)
        case (Self.debugConsole, Self.write):
            let buffer = checkedBuffer(count: a[0], low: a[1], high: a[2])
            if let answer = buffer.answer { return answer }
            guard let memory, buffer.count > 0 else { return .answer(error: SBI.success, value: 0) }
            var bytes = [UInt8](repeating: 0, count: buffer.count)
            let read = bytes.withUnsafeMutableBytes { b in Result { () throws(DeviceMemoryError) in try memory.read(buffer.gpa, b) } }
            if case let .failure(error) = read {
                // Outside RAM: the guest's parameter; RAM that could not be made present: ours.
                if case .outsideRAM = error { return .answer(error: SBI.invalidParam, value: 0) }
                return .answer(error: SBI.failed, value: 0)
            }
            out(bytes)
            return .answer(error: SBI.success, value: UInt64(bytes.count))
        case (Self.debugConsole, _):
            return .answer(error: SBI.notSupported, value: 0)
        default:
            return nil
        }
    }

    /// DBCN's buffer: `count` bytes at high:low. On RV64 the address is `low` alone, so a
    /// non-zero `high` lies beyond every address (SBI_ERR_INVALID_PARAM), as does a buffer
    /// whose end overflows. `answer` is set when the call ends here.
    private func checkedBuffer(count: UInt64, low: UInt64, high: UInt64) -> (gpa: UInt64, count: Int, answer: FirmwareAnswer?) {
        guard high == 0, !low.addingReportingOverflow(count).overflow else {
            return (0, 0, .answer(error: SBI.invalidParam, value: 0))
        }
        guard memory != nil || count == 0 else { return (0, 0, .answer(error: SBI.failed, value: 0)) }
        return (low, Int(min(count, UInt64(Self.maxWrite))), nil)
    }
}
