import AxAddrSpace

/// An arm64 Linux kernel `Image` (Documentation/arch/arm64/booting.rst, "Call the kernel
/// image"): its 64-byte header, checked, and the bytes to load. A gzip-compressed
/// `Image.gz` is inflated first (`Inflate`). riscv64's `Image` has the same header with its
/// own magic (`Flavour.riscv64`, Documentation/arch/riscv/boot-image-header.rst).
///
///     0x00 code0, code1 (u32 each)   0x08 text_offset (u64, LE)   0x10 image_size (u64)
///     0x18 flags (u64)               0x20 res2, res3, res4        0x38 magic "ARM\x64"
///     0x3c res5: offset of the PE/COFF header (EFI stub), 0 if none
public struct ArmKernelImage: Sendable {
    public static let magic: UInt32 = 0x644d_5241  // "ARM\x64", little-endian

    /// Whose Image it is: the magic at 0x38 and the names in refusals.
    public struct Flavour: Sendable {
        public let magic: UInt32
        public let name: String
        public let magicText: String
        /// arm64: the Image booted on arm64 hosts.
        public static let arm64 = Flavour(magic: ArmKernelImage.magic, name: "arm64", magicText: "ARM\\x64")
    }
    public static let headerSize = 64
    /// booting.rst: with image_size 0 (kernels before 3.17) text_offset is 0x80000.
    public static let legacyTextOffset: UInt64 = 0x8_0000

    /// Offset of the kernel from the 2 MiB-aligned base it is loaded above.
    public let textOffset: UInt64
    /// Bytes the kernel occupies from its load address, its BSS included (at least the file).
    public let imageSize: UInt64
    public let flags: UInt64
    /// flags bits 1-2: the kernel's page size, 4096, 16384, 65536, or nil if unspecified.
    public var pageSize: Int? { [nil, 4096, 16384, 65536][Int(flags >> 1 & 3)] }
    /// flags bit 3: the base may be anywhere in RAM (else as low as possible).
    public var placeAnywhere: Bool { flags >> 3 & 1 == 1 }
    /// The file was gzip-compressed (an `Image.gz`).
    public let wasCompressed: Bool
    /// The Image, uncompressed: what is loaded at the base + text_offset.
    public let bytes: [UInt8]

    /// A raw binary without a header (`--raw`; kvm-unit-tests' arm64 tests): loaded where
    /// QEMU loads one, `legacyTextOffset` above the start of RAM, and entered at its first
    /// byte. Its footprint is the file: memory it uses beyond it (its BSS) is its own
    /// business, below the initrd and device tree at the top of RAM.
    public init(raw bytes: [UInt8]) throws(Invalid) {
        guard !bytes.isEmpty else { throw Invalid("empty file") }
        textOffset = Self.legacyTextOffset
        imageSize = UInt64(bytes.count + 0xfff) & ~0xfff
        flags = 0
        wasCompressed = false
        self.bytes = bytes
    }

    /// Checks the header of `bytes` (inflated first, up to `inflateLimit` bytes, if gzip).
    public init(bytes input: [UInt8], inflateLimit: Int, flavour: Flavour = .arm64) throws(Invalid) {
        var b = input
        wasCompressed = Inflate.isGzip(input)
        if wasCompressed {
            do { b = try Inflate.gunzip(input, limit: inflateLimit) } catch {
                throw Invalid("gzip-compressed, but it does not inflate: \(error.reason)")
            }
        }
        guard b.count >= Self.headerSize else {
            throw Invalid("truncated: \(b.count) bytes, shorter than the \(Self.headerSize)-byte \(flavour.name) Image header")
        }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
        guard u32(0x38) == flavour.magic else { throw Invalid("not an \(flavour.name) Image: \(Self.whatItIs(b, flavour))") }
        flags = u64(0x18)
        guard flags & 1 == 0 else { throw Invalid("a big-endian kernel (flags \(hex(flags)) bit 0): axvm boots little-endian kernels") }
        var offset = u64(0x08), size = u64(0x10)
        if size == 0 { offset = Self.legacyTextOffset; size = UInt64(b.count) }
        guard offset % 4096 == 0, offset < 1 << 30 else {
            throw Invalid("text_offset \(hex(offset)) is not a 4 KiB multiple below 1 GiB")
        }
        guard size >= UInt64(b.count) else {
            throw Invalid("image_size \(hex(size)) is smaller than the \(b.count)-byte Image")
        }
        guard size <= 1 << 32 else { throw Invalid("image_size \(hex(size)) is over 4 GiB") }
        try Self.checkSections(b)
        textOffset = offset
        imageSize = size
        bytes = b
    }

    /// With an EFI stub (res5 points at "PE\0\0"), the file must hold every section's raw
    /// data (PE/COFF: NumberOfSections at +6, SizeOfOptionalHeader at +20, 40-byte section
    /// headers after the optional header with SizeOfRawData at +16, PointerToRawData at +20).
    private static func checkSections(_ b: [UInt8]) throws(Invalid) {
        func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
        let pe = Int(u32(0x3c))
        guard pe >= headerSize, pe <= b.count - 24, b[pe] == 0x50, b[pe + 1] == 0x45, b[pe + 2] == 0, b[pe + 3] == 0 else { return }
        let sections = u16(pe + 6), table = pe + 24 + u16(pe + 20)
        var end: UInt64 = 0
        for i in 0..<sections {
            let s = table + i * 40
            guard s + 40 <= b.count else {
                throw Invalid("truncated: the PE/COFF section table ends past the \(b.count)-byte file")
            }
            end = max(end, u32(s + 20) + u32(s + 16))  // two u32s: no overflow
        }
        guard end <= UInt64(b.count) else {
            throw Invalid("truncated: its sections end at \(hex(end)), the file has \(b.count) bytes")
        }
    }

    /// A guess at what the file is, for the refusal.
    private static func whatItIs(_ b: [UInt8], _ flavour: Flavour) -> String {
        if b.count >= 4 && b[0] == 0x7f && b[1] == 0x45 && b[2] == 0x4c && b[3] == 0x46 {
            return "an ELF file (boot the Image from arch/\(flavour.name)/boot, not vmlinux)"
        }
        if b.count >= 0x206 && b[0x202] == 0x48 && b[0x203] == 0x64 && b[0x204] == 0x72 && b[0x205] == 0x53 {
            return "an x86 bzImage"
        }
        return "no \"\(flavour.magicText)\" magic at offset 0x38\(flavour.name == "arm64" ? " (a raw binary is booted with --raw)" : "")"
    }

    /// A header that fails validation, with the reason.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var reason: String
        init(_ reason: String) { self.reason = reason }
        public var description: String { reason }
    }
}
