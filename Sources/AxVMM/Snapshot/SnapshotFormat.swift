import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// The bytes of a snapshot's state file, little-endian, appended in order.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func blob(_ b: [UInt8]) { u64(UInt64(b.count)); bytes.append(contentsOf: b) }
    mutating func string(_ s: String) { blob(Array(s.utf8)) }
    mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
}

/// Reads what `ByteWriter` wrote. Every read names the field (built only when it fails),
/// so that a short or damaged file is refused with the file and the field it broke at.
struct ByteReader {
    let path: String
    private let bytes: [UInt8]
    private(set) var offset = 0
    init(_ bytes: [UInt8], path: String) { self.bytes = bytes; self.path = path }

    var remaining: Int { bytes.count - offset }

    /// A field read whole but refused: this file, the field and why.
    func error(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }

    /// A block's leading magic and version, each checked ("`what` magic", "`what` version";
    /// `tag`: the magic's name in the message, e.g. "ONER").
    mutating func header(_ what: String, magic: UInt32, tag: String, version: UInt32) throws(VMMError) {
        let m = try u32("\(what) magic")
        guard m == magic else { throw error("\(what) magic", "0x\(String(m, radix: 16)), not \(tag)'s 0x\(String(magic, radix: 16))") }
        let v = try u32("\(what) version")
        guard v == version else { throw error("\(what) version", "\(v); this axvm reads \(version)") }
    }

    private mutating func need(_ n: Int, _ field: @autoclosure () -> String) throws(VMMError) {
        guard n >= 0, n <= remaining else {
            throw .snapshot(path: path, field: field(), reason: "the file ends at byte \(bytes.count), \(n) bytes needed at \(offset) (truncated?)")
        }
    }
    /// `count` little-endian words at the current offset (checked by `need`).
    private mutating func words<T: FixedWidthInteger>(_: T.Type, _ count: Int, _ field: @autoclosure () -> String) throws(VMMError) -> [T] {
        try need(count * MemoryLayout<T>.size, field())
        let at = offset
        offset += count * MemoryLayout<T>.size
        // Sound: `need` checked that the words lie inside the array.
        return bytes.withUnsafeBytes { b in
            (0..<count).map { T(littleEndian: b.loadUnaligned(fromByteOffset: at + $0 * MemoryLayout<T>.size, as: T.self)) }
        }
    }
    /// One little-endian word (no array: the page index reads tens of thousands).
    private mutating func word<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws(VMMError) -> T {
        try need(MemoryLayout<T>.size, field())
        let at = offset
        offset += MemoryLayout<T>.size
        // Sound: `need` checked that the word lies inside the array.
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }
    mutating func u8(_ field: @autoclosure () -> String) throws(VMMError) -> UInt8 { try word(UInt8.self, field()) }
    mutating func u32(_ field: @autoclosure () -> String) throws(VMMError) -> UInt32 { try word(UInt32.self, field()) }
    mutating func u64(_ field: @autoclosure () -> String) throws(VMMError) -> UInt64 { try word(UInt64.self, field()) }
    /// `count` 64-bit words at once.
    mutating func u64s(_ count: Int, _ field: @autoclosure () -> String) throws(VMMError) -> [UInt64] {
        try words(UInt64.self, count, field())
    }
    mutating func blob(_ field: @autoclosure () -> String, limit: Int = 1 << 30) throws(VMMError) -> [UInt8] {
        let n = try u64(field() + " length")
        guard n <= UInt64(min(limit, remaining)) else {
            throw .snapshot(path: path, field: field(), reason: "length \(n) is more than the \(min(limit, remaining)) bytes it may have")
        }
        return try raw(Int(n), field())
    }
    mutating func string(_ field: @autoclosure () -> String) throws(VMMError) -> String {
        String(decoding: try blob(field(), limit: 4096), as: UTF8.self)
    }
    mutating func raw(_ n: Int, _ field: @autoclosure () -> String) throws(VMMError) -> [UInt8] {
        try need(n, field())
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`): the state file's trailer. Eight bytes
/// a step (slicing-by-8): the state of a large guest is megabytes of page checksums, and a
/// restore checks it before anything else.
enum CRC32 {
    private static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xff)] }
        }
        return t
    }()
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        tables.withUnsafeBufferPointer { t in
            bytes.withUnsafeBytes { b in
                var i = 0
                while i + 8 <= b.count {
                    let lo = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ c
                    let hi = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                    c = t[7 * 256 + Int(lo & 0xff)] ^ t[6 * 256 + Int(lo >> 8 & 0xff)] ^ t[5 * 256 + Int(lo >> 16 & 0xff)]
                        ^ t[4 * 256 + Int(lo >> 24)] ^ t[3 * 256 + Int(hi & 0xff)] ^ t[2 * 256 + Int(hi >> 8 & 0xff)]
                        ^ t[256 + Int(hi >> 16 & 0xff)] ^ t[Int(hi >> 24)]
                    i += 8
                }
                while i < b.count {
                    c = t[Int((c ^ UInt32(b[i])) & 0xff)] ^ (c >> 8)
                    i += 1
                }
            }
        }
        return c ^ 0xFFFF_FFFF
    }
}

/// A page's checksum in the snapshot index: a multiply-xor hash over its 512 words (a
/// damaged memory file is caught when the page is read back). Never 0: 0 marks "not in
/// the snapshot" in `SnapshotPages`.
enum PageHash {
    static func of(_ page: UnsafeRawPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<512 {
            h = (h ^ page.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01b3
            h ^= h >> 29
        }
        return h | 1
    }
}

/// Reads a whole regular file of at most `limit` bytes (a snapshot's state file): its first
/// `SnapshotState.headerSize` bytes are handed to `checkHeader` before the rest is read, so
/// a file that is no snapshot costs no more than its header.
func readSnapshotFile(_ path: String, field: String, limit: Int,
                      checkHeader: ([UInt8]) throws(VMMError) -> Void = { _ throws(VMMError) in }) throws(VMMError) -> [UInt8] {
    func bad(_ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
    // O_NONBLOCK: a FIFO put in the snapshot's place must not block the open; it is refused below.
    let fd = ckvm_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw bad(errnoString(errno)) }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw bad(errnoString(errno)) }
    guard ckvm_is_regular_file(UInt32(st.st_mode)) != 0 else { throw bad("not a regular file") }
    guard st.st_size <= limit else { throw bad("\(st.st_size) bytes, more than a snapshot's state can be (\(limit))") }
    var out = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    var checked = false
    while done < out.count {
        // The header alone first.
        let want = checked ? out.count - done : min(out.count, SnapshotState.headerSize) - done
        let n = out.withUnsafeMutableBytes { b in b.baseAddress.map { pread(fd, $0 + done, want, off_t(done)) } ?? 0 }
        if n < 0 { if errno == EINTR { continue }; throw bad(errnoString(errno)) }
        if n == 0 { break }  // shorter than fstat said: it changed while read; the checks below see what is there
        done += n
        if !checked && done >= min(out.count, SnapshotState.headerSize) {
            try checkHeader(Array(out[..<done]))
            checked = true
        }
    }
    out.removeLast(out.count - done)
    if !checked { try checkHeader(out) }
    return out
}

/// Writes all of `bytes` at `offset` of `fd` (pwrite until done, EINTR retried).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64) -> Int32? {
    guard let base = bytes.baseAddress else { return nil }
    var done = 0
    while done < bytes.count {
        let n = pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
        if n < 0 { if errno == EINTR { continue }; return errno }
        if n == 0 { return ENOSPC }
        done += n
    }
    return nil
}
