/// Parses a byte count as the command line writes it: "4096", "512K", "64M", "1G", "2MiB",
/// "8GB" (binary multiples; the letters K/M/G/T, B and "iB" in either ASCII case, "iB" only
/// after a multiplier). Nil for anything else: an empty string, a sign, a fraction, a
/// non-ASCII letter that merely case-folds to one of these (dotless ı, the Kelvin sign), or a
/// value that does not fit in 64 bits. Shared by every front end so that they accept exactly
/// the same spellings.
public func parseByteSize(_ text: String) -> UInt64? {
    // ASCII bytes only, upper-cased by hand (String.uppercased() folds non-ASCII letters).
    var b = Array(text.utf8).map { $0 >= 0x61 && $0 <= 0x7a ? $0 - 0x20 : $0 }
    var hadIB = false
    if b.last == UInt8(ascii: "B") {
        b.removeLast()
        if b.last == UInt8(ascii: "I") { b.removeLast(); hadIB = true }
    }
    var shift: UInt64 = 0
    switch b.last {
    case UInt8(ascii: "K"): shift = 10
    case UInt8(ascii: "M"): shift = 20
    case UInt8(ascii: "G"): shift = 30
    case UInt8(ascii: "T"): shift = 40
    default: break
    }
    if shift > 0 { b.removeLast() } else if hadIB { return nil }  // "5iB": iB needs a multiplier
    guard !b.isEmpty, b.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    var n: UInt64 = 0
    for d in b {
        let (m, o1) = n.multipliedReportingOverflow(by: 10)
        let (s, o2) = m.addingReportingOverflow(UInt64(d - 0x30))
        if o1 || o2 { return nil }
        n = s
    }
    guard n <= UInt64.max >> shift else { return nil }
    return n << shift
}

extension Array where Element == UInt8 {
    /// Whether the UTF-8 of `text` occurs in these bytes (String.contains(String) needs
    /// _StringProcessing, which Embedded Swift does not have).
    func containsBytes(of text: String) -> Bool { offset(of: text) != nil }

    /// Where the UTF-8 of `text` first occurs in these bytes.
    func offset(of text: String) -> Int? {
        let pattern = Array(text.utf8)
        guard !pattern.isEmpty else { return 0 }
        guard count >= pattern.count else { return nil }
        for i in 0...(count - pattern.count) where self[i] == pattern[0] {
            if self[i..<(i + pattern.count)].elementsEqual(pattern) { return i }
        }
        return nil
    }
}
