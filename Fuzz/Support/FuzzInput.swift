// Shared by every libFuzzer target in Fuzz/ (scripts/fuzz.sh compiles it into each one).

/// Reads fixed-width little-endian fields from a fuzz input. Bytes past the end read as
/// zero, so every input, however short, decodes to one record: the fuzzer never wastes
/// executions on inputs of the wrong length.
struct FuzzInput {
    let bytes: UnsafeBufferPointer<UInt8>
    var offset = 0

    /// libFuzzer may pass a null pointer with size 0; the optional makes that case sound.
    init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = UnsafeBufferPointer(start: size > 0 ? data : nil, count: size > 0 ? size : 0)
    }

    mutating func u64() -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 where offset + i < bytes.count {
            v |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        offset += 8
        return v
    }

    var array: [UInt8] { Array(bytes) }
}

/// An invariant of the code under test. On failure: print what broke and with which input
/// values, then trap, which libFuzzer reports as a crash and saves the input.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String,
               file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fatalError("invariant broken: \(message())", file: file, line: line) }
}

/// Keeps a computed value alive so the optimizer cannot drop the computation.
@inline(never) func keep<T>(_ value: T) { withExtendedLifetime(value) {} }
