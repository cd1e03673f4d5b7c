// libFuzzer target: `parseByteSize(_:)` (Sources/AxVMM/ByteSize.swift), the command line's
// size parser. Input: the argument's bytes (invalid UTF-8 is repaired as the command line
// does). Built with ByteSize.swift alone by scripts/fuzz.sh.
//
// Checked against `reference(_:)`, an independent parser of the documented grammar: ASCII
// digits, then nothing, "B", or K/M/G/T followed by nothing, "B" or "iB", in any case; the
// value is the digits times 2^(10, 20, 30, 40) and must fit in 64 bits.

import Glibc

/// The documented grammar, on bytes, ASCII only. `lenient` also accepts the two spellings
/// `parseByteSize` is known to take beyond it (see `knownDeviation`).
func reference(_ text: String, lenient: Bool = false) -> UInt64? {
    var b = Array(text.utf8)
    if lenient {
        // U+0131 (dotless ı) uppercases to "I"; U+212A (Kelvin sign) is canonically "K".
        b = replace(b, [0xc4, 0xb1], with: UInt8(ascii: "I"))
        b = replace(b, [0xe2, 0x84, 0xaa], with: UInt8(ascii: "K"))
    }
    func up(_ c: UInt8) -> UInt8 { c >= 0x61 && c <= 0x7a ? c - 0x20 : c }
    var shift: UInt64 = 0
    var n = b.count
    // Optional "B", optionally preceded by "I" (only after a multiplier, unless lenient).
    var hadI = false
    if n > 0, up(b[n - 1]) == UInt8(ascii: "B") {
        n -= 1
        if n > 0, up(b[n - 1]) == UInt8(ascii: "I") { n -= 1; hadI = true }
    }
    if n > 0 {
        switch up(b[n - 1]) {
        case UInt8(ascii: "K"): shift = 10
        case UInt8(ascii: "M"): shift = 20
        case UInt8(ascii: "G"): shift = 30
        case UInt8(ascii: "T"): shift = 40
        default: break
        }
        if shift > 0 { n -= 1 }
    }
    if hadI && shift == 0 && !lenient { return nil }
    guard n > 0 else { return nil }
    var value: UInt64 = 0
    for c in b[..<n] {
        guard c >= 0x30 && c <= 0x39 else { return nil }
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (s, o2) = m.addingReportingOverflow(UInt64(c - 0x30))
        if o1 || o2 { return nil }
        value = s
    }
    guard value <= UInt64.max >> shift else { return nil }
    return value << shift
}

func replace(_ b: [UInt8], _ what: [UInt8], with c: UInt8) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        if i + what.count <= b.count && b[i..<(i + what.count)].elementsEqual(what) {
            out.append(c)
            i += what.count
        } else {
            out.append(b[i])
            i += 1
        }
    }
    return out
}

/// Found by this target and reported, not yet fixed in ByteSize.swift: "5iB" (an "iB" with
/// no multiplier) parses as 5, and non-ASCII "ı" / "K" stand in for "i" / "K" ("1Kıb" is
/// 1024). Tolerated unless AXVM_FUZZ_STRICT=1; delete with the fix.
let strict = getenv("AXVM_FUZZ_STRICT").map { String(cString: $0) == "1" } ?? false
func knownDeviation(_ text: String, _ got: UInt64?) -> Bool {
    false  // parseByteSize now folds ASCII only and wants a multiplier before "iB"
}

let suffixes = ["", "B", "K", "KB", "KiB", "m", "mb", "MIB", "G", "gB", "GiB", "t", "TB", "tib"]
let shifts: [UInt64] = [0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let text = String(decoding: input.bytes, as: UTF8.self)
    let got = parseByteSize(text)
    let want = reference(text)
    invariant(got == want || knownDeviation(text, got),
              "parseByteSize(\(text.debugDescription)) = \(got.map(String.init) ?? "nil"), reference \(want.map(String.init) ?? "nil")")

    // Dense check of the valid spellings, which random strings rarely reach: the input's
    // first 8 bytes as a number, written with every suffix, parse to number << shift
    // exactly when that fits in 64 bits.
    let n = input.u64() >> (input.u64() & 63)
    for (suffix, shift) in zip(suffixes, shifts) {
        let s = "\(n)\(suffix)"
        let fits = n <= UInt64.max >> shift
        let r = parseByteSize(s)
        invariant(r == (fits ? n << shift : nil), "parseByteSize(\(s.debugDescription)) = \(r.map(String.init) ?? "nil")")
    }
    return 0
}
