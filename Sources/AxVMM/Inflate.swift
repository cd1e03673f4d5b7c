/// A DEFLATE (RFC 1951) decoder and gzip (RFC 1952) member reader, for `Image.gz` kernels:
/// stored, fixed and dynamic Huffman blocks; canonical codes decoded through one table
/// lookup per symbol; the gzip trailer's CRC-32 and size checked; output bounded. Pure Swift
/// (no zlib to link into the static Embedded build).
enum Inflate {
    /// Why the input does not inflate, naming the byte offset or value.
    struct Failure: Error, CustomStringConvertible {
        var reason: String
        init(_ reason: String) { self.reason = reason }
        var description: String { reason }
    }

    static func isGzip(_ b: [UInt8]) -> Bool { b.count >= 2 && b[0] == 0x1f && b[1] == 0x8b }

    /// The first gzip member of `input`, inflated (at most `limit` bytes); anything after
    /// the member is ignored, as Linux's own decompressors do.
    static func gunzip(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        guard input.count >= 10 else { throw Failure("truncated: \(input.count) bytes, shorter than a gzip header") }
        guard isGzip(input) else { throw Failure("no gzip magic (1f 8b)") }
        guard input[2] == 8 else { throw Failure("compression method \(input[2]), not deflate (8)") }
        let flags = input[3]
        var pos = 10
        func skipString() throws(Failure) {
            while pos < input.count && input[pos] != 0 { pos += 1 }
            guard pos < input.count else { throw Failure("truncated: the gzip header's name or comment has no end") }
            pos += 1
        }
        if flags & 4 != 0 {  // FEXTRA: a 2-byte length, then that many bytes
            guard pos + 2 <= input.count else { throw Failure("truncated in the gzip header's extra field") }
            pos += 2 + (Int(input[pos]) | Int(input[pos + 1]) << 8)
        }
        if flags & 8 != 0 { try skipString() }   // FNAME
        if flags & 16 != 0 { try skipString() }  // FCOMMENT
        if flags & 2 != 0 { pos += 2 }           // FHCRC
        guard pos <= input.count else { throw Failure("truncated: the gzip header ends past the \(input.count)-byte file") }
        var d = Decoder(input: input, pos: pos, limit: limit)
        try d.inflate()
        let t = d.bytePosition
        guard t + 8 <= input.count else { throw Failure("truncated: no gzip trailer after the compressed data (at byte \(t))") }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(input[o + $1]) << (8 * UInt32($1)) } }
        let crc = crc32(d.out)
        guard crc == u32(t) else {
            throw Failure("CRC-32 0x\(String(crc, radix: 16)) of the inflated data differs from the trailer's 0x\(String(u32(t), radix: 16))")
        }
        guard UInt32(truncatingIfNeeded: d.out.count) == u32(t + 4) else {
            throw Failure("inflated to \(d.out.count) bytes, the trailer says \(u32(t + 4)) (mod 2^32)")
        }
        return d.out
    }

    static let crcTable: [UInt32] = (0..<256).map { (n: UInt32) in
        (0..<8).reduce(n) { c, _ in c & 1 == 1 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
    }

    /// CRC-32 (ISO 3309, the gzip trailer's).
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xffff_ffff
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xffff_ffff
    }

    /// A canonical Huffman code as one table: indexed by the next `maxLength` input bits (in
    /// the order they are read), each entry is symbol << 4 | code length (0: no code).
    struct Code {
        let table: [UInt16]
        let maxLength: Int

        init(lengths: [UInt8]) throws(Failure) {
            var count = [Int](repeating: 0, count: 16)
            for l in lengths { count[Int(l)] += 1 }
            count[0] = 0
            var left = 1
            for n in 1...15 {
                left = left << 1 - count[n]
                guard left >= 0 else { throw Failure("over-subscribed Huffman code (\(count[n]) codes of length \(n))") }
            }
            // An incomplete code is accepted (a lone distance code is); its gaps decode as errors.
            maxLength = max(1, lengths.map(Int.init).max() ?? 1)
            var next = [Int](repeating: 0, count: 16)
            var code = 0
            for n in 1...15 {
                code = (code + count[n - 1]) << 1
                next[n] = code
            }
            var table = [UInt16](repeating: 0, count: 1 << maxLength)
            for (symbol, l) in lengths.enumerated() where l > 0 {
                let n = Int(l), c = next[n]
                next[n] += 1
                var reversed = 0  // codes are sent most significant bit first
                for i in 0..<n { reversed |= (c >> i & 1) << (n - 1 - i) }
                var i = reversed
                while i < table.count {
                    table[i] = UInt16(symbol << 4 | n)
                    i += 1 << n
                }
            }
            self.table = table
        }

        static let fixedLiterals: Code? = try? Code(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
        static let fixedDistances: Code? = try? Code(lengths: [UInt8](repeating: 5, count: 30))
    }

    // RFC 1951 §3.2.5: length and distance bases and extra bits.
    static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                                      2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    /// The order code length code lengths come in (§3.2.7).
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    struct Decoder {
        let input: [UInt8]
        var pos: Int
        let limit: Int
        var out: [UInt8] = []
        private var bitBuffer: UInt64 = 0
        private var bitCount = 0

        init(input: [UInt8], pos: Int, limit: Int) {
            self.input = input
            self.pos = pos
            self.limit = limit
        }

        /// The first byte after the bits consumed (whole bytes read ahead are given back).
        var bytePosition: Int { pos - bitCount / 8 }

        private mutating func fill(_ n: Int) {
            while bitCount < n && pos < input.count {
                bitBuffer |= UInt64(input[pos]) << UInt64(bitCount)
                pos += 1
                bitCount += 8
            }
        }

        private mutating func bits(_ n: Int) throws(Failure) -> Int {
            fill(n)
            guard bitCount >= n else { throw Failure("truncated: the compressed data ends at byte \(input.count)") }
            let v = Int(bitBuffer & (1 << UInt64(n) - 1))
            bitBuffer >>= UInt64(n)
            bitCount -= n
            return v
        }

        private mutating func decode(_ code: Code) throws(Failure) -> Int {
            fill(code.maxLength)
            let e = Int(code.table[Int(bitBuffer & (1 << UInt64(code.maxLength) - 1))])
            let n = e & 15
            guard e != 0 else { throw Failure("invalid Huffman code near byte \(bytePosition)") }
            guard n <= bitCount else { throw Failure("truncated: the compressed data ends at byte \(input.count)") }
            bitBuffer >>= UInt64(n)
            bitCount -= n
            return e >> 4
        }

        private mutating func append(_ b: UInt8) throws(Failure) {
            guard out.count < limit else { throw Failure("inflates to more than the \(limit)-byte limit") }
            out.append(b)
        }

        mutating func inflate() throws(Failure) {
            var final = false
            while !final {
                final = try bits(1) == 1
                switch try bits(2) {
                case 0: try stored()
                case 1:
                    guard let l = Code.fixedLiterals, let d = Code.fixedDistances else { throw Failure("fixed codes") }
                    try codes(l, d)
                case 2:
                    let (l, d) = try dynamicCodes()
                    try codes(l, d)
                default: throw Failure("block type 3 (reserved) near byte \(bytePosition)")
                }
            }
        }

        private mutating func stored() throws(Failure) {
            // To a byte boundary; the bytes read ahead go back to the input.
            pos = bytePosition
            bitBuffer = 0
            bitCount = 0
            guard pos + 4 <= input.count else { throw Failure("truncated: a stored block's header at byte \(pos)") }
            let len = Int(input[pos]) | Int(input[pos + 1]) << 8, nlen = Int(input[pos + 2]) | Int(input[pos + 3]) << 8
            guard len == ~nlen & 0xffff else { throw Failure("stored block at byte \(pos): LEN \(len) and NLEN \(nlen) disagree") }
            pos += 4
            guard pos + len <= input.count else { throw Failure("truncated: a \(len)-byte stored block at byte \(pos)") }
            guard out.count + len <= limit else { throw Failure("inflates to more than the \(limit)-byte limit") }
            out += input[pos..<(pos + len)]
            pos += len
        }

        private mutating func dynamicCodes() throws(Failure) -> (Code, Code) {
            let literals = try bits(5) + 257, distances = try bits(5) + 1, codeLengths = try bits(4) + 4
            guard literals <= 286, distances <= 30 else {
                throw Failure("dynamic block with \(literals) literal/length and \(distances) distance codes (at most 286 and 30)")
            }
            var clLengths = [UInt8](repeating: 0, count: 19)
            for i in 0..<codeLengths { clLengths[codeLengthOrder[i]] = UInt8(try bits(3)) }
            let cl = try Code(lengths: clLengths)
            var lengths: [UInt8] = []
            while lengths.count < literals + distances {
                let sym = try decode(cl)
                switch sym {
                case 0...15: lengths.append(UInt8(sym))
                case 16:
                    guard let previous = lengths.last else { throw Failure("a repeat code with no length before it") }
                    lengths += [UInt8](repeating: previous, count: 3 + (try bits(2)))
                case 17: lengths += [UInt8](repeating: 0, count: 3 + (try bits(3)))
                default: lengths += [UInt8](repeating: 0, count: 11 + (try bits(7)))
                }
            }
            guard lengths.count == literals + distances else { throw Failure("code lengths repeat past the end of the table") }
            guard lengths[256] != 0 else { throw Failure("dynamic block without an end-of-block code") }
            return (try Code(lengths: Array(lengths[..<literals])), try Code(lengths: Array(lengths[literals...])))
        }

        private mutating func codes(_ literals: Code, _ distances: Code) throws(Failure) {
            while true {
                let sym = try decode(literals)
                if sym < 256 {
                    try append(UInt8(sym))
                    continue
                }
                if sym == 256 { return }
                let i = sym - 257
                guard i < 29 else { throw Failure("length code \(sym) (at most 285)") }
                let length = lengthBase[i] + (try bits(lengthExtra[i]))
                let d = try decode(distances)
                guard d < 30 else { throw Failure("distance code \(d) (at most 29)") }
                let distance = distanceBase[d] + (try bits(distanceExtra[d]))
                guard distance <= out.count else {
                    throw Failure("distance \(distance) reaches before the start of the output (\(out.count) bytes so far)")
                }
                guard out.count + length <= limit else { throw Failure("inflates to more than the \(limit)-byte limit") }
                let from = out.count - distance
                for k in 0..<length { out.append(out[from + k]) }  // may overlap what it appends
            }
        }
    }
}
