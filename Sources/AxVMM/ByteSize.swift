/// Parses a byte count as the command line writes it: "4096", "512K", "64M", "1G", "2MiB",
/// "8GB" (binary multiples, case-insensitive). Nil for anything else: an empty string,
/// a sign, a fraction, an unknown suffix, or a value that does not fit in 64 bits.
/// Shared by every front end so that they accept exactly the same spellings.
public func parseByteSize(_ text: String) -> UInt64? {
    var s = Substring(text.uppercased())
    if s.hasSuffix("IB") { s = s.dropLast(2) } else if s.hasSuffix("B") { s = s.dropLast() }
    var shift: UInt64 = 0
    switch s.last {
    case "K": shift = 10
    case "M": shift = 20
    case "G": shift = 30
    case "T": shift = 40
    default: break
    }
    if shift > 0 { s = s.dropLast() }
    // Digits only: UInt64("+5") would accept a sign.
    guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt64(s) else { return nil }
    guard n <= UInt64.max >> shift else { return nil }
    return n << shift
}
