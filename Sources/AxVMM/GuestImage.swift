#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// A flat-binary guest from `guests/`: a 16-byte header, then code.
///
/// Header: magic `AXG1`, u32 mode (each architecture's `GuestArch.imageModes`: 16 = x86 real
/// mode, 64 = x86 long mode, 0xAA64 = AArch64 EL1, 0x5264 = riscv64 S-mode), u64 entry offset
/// from the load address.
public struct GuestImage: Sendable {
    /// A header mode: how the guest starts and where it is loaded. The architectures define
    /// theirs beside their layouts (`.real`, `.long`, `.aarch64`, `.riscv64`).
    public struct Mode: Hashable, Sendable {
        public let rawValue: UInt32
        public let name: String
        /// Where an image of this mode is loaded.
        public let loadAddress: UInt64
        public static func == (a: Mode, b: Mode) -> Bool { a.rawValue == b.rawValue }
        public func hash(into h: inout Hasher) { h.combine(rawValue) }
    }
    public let path: String
    public let bytes: [UInt8]
    public let mode: Mode
    /// The architecture that runs it (the one whose `imageModes` has `mode`).
    public let arch: GuestArch
    public let entryOffset: UInt64

    /// Where the image is loaded (`Mode.loadAddress`).
    public var loadAddress: UInt64 { mode.loadAddress }

    public init(path: String) throws(VMMError) {
        let fd = ckvm_open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)  // a FIFO must not block the open
        guard fd >= 0 else {
            let e = errno
            throw .guestImage(path: path, reason: e == ENOENT ? "no such file" : errnoString(e))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .guestImage(path: path, reason: errnoString(errno)) }
        guard ckvm_is_regular_file(st.st_mode) != 0 else { throw .guestImage(path: path, reason: "not a regular file") }
        guard st.st_size > 0 else { throw .guestImage(path: path, reason: "file is empty") }
        guard st.st_size <= 64 << 20 else { throw .guestImage(path: path, reason: "\(st.st_size) bytes, more than the 64 MiB limit") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .guestImage(path: path, reason: n == 0 ? "short read" : errnoString(errno)) }
            done += n
        }
        try self.init(path: path, bytes: bytes)
    }

    public init(path: String, bytes: [UInt8]) throws(VMMError) {
        guard bytes.count >= 16, bytes[0..<4].elementsEqual("AXG1".utf8) else {
            throw .guestImage(path: path, reason: "not an axvm guest (no AXG1 header; build guests with scripts/build-guests.sh)")
        }
        let modeRaw = bytes[4..<8].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard let arch = GuestArch.known.first(where: { a in a.imageModes.contains { $0.rawValue == modeRaw } }),
              let mode = arch.imageModes.first(where: { $0.rawValue == modeRaw }) else {
            let expected = GuestArch.known.map { a in a.imageModes.map { "0x\(String($0.rawValue, radix: 16)) for \($0.name)" }.joined(separator: ", ") }
            throw .guestImage(path: path, reason: "unknown mode 0x\(String(modeRaw, radix: 16)) in header (expected \(expected.joined(separator: ", ")))")
        }
        let entry = bytes[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard entry < UInt64(bytes.count) else {
            throw .guestImage(path: path, reason: "entry offset \(entry) is past the end of the \(bytes.count)-byte image")
        }
        if mode == .real && bytes.count > 0xf000 {
            throw .guestImage(path: path, reason: "real-mode image of \(bytes.count) bytes does not fit below its stack in the 64 KiB segment (0xf000 bytes at most)")
        }
        self.path = path
        self.bytes = bytes
        self.mode = mode
        self.arch = arch
        self.entryOffset = entry
    }
}
