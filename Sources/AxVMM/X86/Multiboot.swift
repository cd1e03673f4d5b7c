import AxAddrSpace

// Multiboot v1 (the Multiboot Specification 0.6.96): the kernels kvm-unit-tests builds for
// x86 are ELF32 executables with a multiboot header, started in 32-bit protected mode with
// EBX pointing at a "multiboot information" block. Pure: parsed and placed on any host.

/// A multiboot v1 kernel: an ELF32 i386 executable (loaded by its program headers) whose
/// first 8 KiB hold the multiboot header (§3.1.1: magic, flags, checksum; the three sum to 0).
public struct MultibootKernel: Sendable {
    /// The header's magic and the one the loader leaves in EAX (§3.2).
    public static let headerMagic: UInt32 = 0x1BAD_B002
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    /// The header must lie, 4-byte aligned, within the file's first 8192 bytes.
    static let searchLimit = 8192

    /// A PT_LOAD program header: `fileSize` bytes from `fileOffset` at `address` (p_paddr),
    /// zeros up to `memorySize`.
    public struct Segment: Sendable, Equatable {
        public var fileOffset: Int
        public var address: UInt64
        public var fileSize: UInt64
        public var memorySize: UInt64
        public var end: UInt64 { address + memorySize }
    }

    public let path: String
    public let bytes: [UInt8]
    public let segments: [Segment]
    public let entry: UInt64
    public let headerFlags: UInt32

    /// The offset of a valid multiboot header in `bytes`, nil if there is none.
    public static func headerOffset(in bytes: [UInt8]) -> Int? {
        var o = 0
        while o + 12 <= min(bytes.count, searchLimit) {
            if bytes.u32(at: o) == headerMagic && bytes.u32(at: o) &+ bytes.u32(at: o + 4) &+ bytes.u32(at: o + 8) == 0 { return o }
            o += 4
        }
        return nil
    }

    public init(path: String, bytes: [UInt8]) throws(LinuxBootError) {
        func refuse(_ reason: String) -> LinuxBootError { .kernel(path: path, reason: reason) }
        guard let header = Self.headerOffset(in: bytes) else { throw refuse("no multiboot header in its first \(Self.searchLimit) bytes") }
        let flags = bytes.u32(at: header + 4)
        // Bits 0-15 are requirements (§3.1.2): 0 (modules page-aligned) and 1 (memory
        // information) are always met; 2 asks for a video mode, the others are unknown.
        if flags & 1 << 2 != 0 { throw refuse("multiboot flags \(hex(UInt64(flags))) ask for a video mode (bit 2): axvm has no display") }
        if flags & 1 << 16 != 0 {
            throw refuse("multiboot flags \(hex(UInt64(flags))) give load addresses in the header (bit 16, for a.out kernels): axvm loads ELF kernels by their program headers")
        }
        if flags & 0xfff8 != 0 {
            throw refuse("multiboot flags \(hex(UInt64(flags))) require features axvm does not know (bits 3-15)")
        }
        // ELF32 header (System V ABI, i386 supplement): identification, e_type 2 (EXEC),
        // e_machine 3 (EM_386), e_entry at 24, e_phoff at 28, e_phentsize at 42, e_phnum at 44.
        guard bytes.count >= 52, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw refuse("a multiboot header, but not an ELF file (axvm loads multiboot kernels in ELF32 format)")
        }
        guard bytes[4] == 1, bytes[5] == 1 else {
            throw refuse("ELF class \(bytes[4]), data encoding \(bytes[5]): a multiboot kernel is ELF32 little-endian (1, 1)")
        }
        let type = bytes.u16(at: 16), machine = bytes.u16(at: 18)
        guard type == 2, machine == 3 else { throw refuse("ELF type \(type), machine \(machine): expected an i386 executable (2, 3)") }
        let phoff = Int(bytes.u32(at: 28)), phentsize = Int(bytes.u16(at: 42)), phnum = Int(bytes.u16(at: 44))
        guard phentsize >= 32, phnum >= 1, phoff <= bytes.count, phnum * phentsize <= bytes.count - phoff else {
            throw refuse("program header table (offset \(phoff), \(phnum) entries of \(phentsize) bytes) is not inside the \(bytes.count)-byte file")
        }
        var segments: [Segment] = []
        for i in 0..<phnum {
            let p = phoff + i * phentsize
            guard bytes.u32(at: p) == 1 else { continue }  // PT_LOAD
            let s = Segment(fileOffset: Int(bytes.u32(at: p + 4)), address: UInt64(bytes.u32(at: p + 12)),
                            fileSize: UInt64(bytes.u32(at: p + 16)), memorySize: UInt64(bytes.u32(at: p + 20)))
            guard s.fileSize <= s.memorySize else {
                throw refuse("segment \(i) has more bytes in the file (\(s.fileSize)) than in memory (\(s.memorySize))")
            }
            guard UInt64(s.fileOffset) + s.fileSize <= UInt64(bytes.count) else {
                throw refuse("segment \(i)'s \(s.fileSize) bytes at offset \(s.fileOffset) end past the \(bytes.count)-byte file (truncated?)")
            }
            guard s.end <= 1 << 32 else { throw refuse("segment \(i) at \(hex(s.address)) + \(hex(s.memorySize)) ends past 4 GiB") }
            if s.memorySize > 0 { segments.append(s) }
        }
        guard !segments.isEmpty else { throw refuse("no loadable segment (PT_LOAD) in its program headers") }
        let entry = UInt64(bytes.u32(at: 24))
        guard segments.contains(where: { $0.address <= entry && entry < $0.end }) else {
            throw refuse("entry point \(hex(entry)) is in none of its loadable segments")
        }
        self.path = path
        self.bytes = bytes
        self.segments = segments
        self.entry = entry
        headerFlags = flags
    }
}

/// Where a multiboot boot puts things, and the information block (§3.3) it hands the
/// kernel: the kernel's segments where their headers say; the module (`--initrd`, which
/// kvm-unit-tests reads as its environment) on the next page after the kernel's end; then
/// the information block, its module entry and memory map (page 1), the command line (page
/// 2: the kernel's path, then the arguments). All below 4 GiB: the block holds 32-bit addresses.
public struct MultibootPlan: Sendable {
    public let kernel: MultibootKernel
    public let ram: [GuestPhysRange]
    public let moduleAddress: UInt64
    public let moduleSize: UInt64
    public let infoAddress: UInt64
    /// The information page and the command line page, to write at `infoAddress`.
    public let info: [UInt8]
    public let placements: [BootPlacement]

    /// The longest command line (one page, its NUL included).
    public static let maxCmdline = 4095
    /// mem_lower: the PC's 640 KiB of conventional memory.
    static let memLowerKiB: UInt32 = 640

    /// `cmdline` goes to the kernel after its own path, as GRUB and QEMU pass it (argv[0]).
    public init(kernel: MultibootKernel, ram: [GuestPhysRange], cmdline: String, modulePath: String?, moduleSize: UInt64) throws(LinuxBootError) {
        let line = Array((cmdline.isEmpty ? kernel.path : kernel.path + " " + cmdline).utf8)
        guard line.count <= Self.maxCmdline else {
            throw .cmdline(reason: "\(line.count) bytes with the kernel's path before it, more than the \(Self.maxCmdline) a multiboot command line page holds")
        }
        guard !line.contains(0) else { throw .cmdline(reason: "contains a NUL byte") }
        var places = kernel.segments.enumerated().map { BootPlacement("kernel segment \($0.offset)", $0.element.address, end: $0.element.end) }
        let kernelEnd = kernel.segments.map { $0.end }.max() ?? 0  // each below 4 GiB
        let module = (kernelEnd + 0xfff) & ~0xfff
        let moduleEnd = module + moduleSize
        guard moduleSize <= 1 << 32, (moduleEnd + 0xfff) & ~0xfff + 0x2000 <= 1 << 32 else {
            throw .initrd(path: modulePath ?? "", reason: "\(moduleSize) bytes after the kernel's end at \(hex(kernelEnd)) do not fit below 4 GiB")
        }
        let infoAddress = (moduleEnd + 0xfff) & ~0xfff
        if moduleSize > 0 { places.append(BootPlacement("module", module, end: moduleEnd)) }
        places.append(BootPlacement("multiboot information", infoAddress, end: infoAddress + 0x2000))
        try BootPlacement.validate(places, ram: ram)

        // The information block (§3.3): flags 0 mem_*, 2 cmdline, 3 mods, 6 mmap.
        var page = [UInt8](repeating: 0, count: 0x2000)
        let low = ram.first.map { $0.end.raw } ?? 0  // RAM from 0 (checked by validate above)
        let mmapOffset = 0x100, moduleEntry = 0x80, moduleName = 0x800
        let mmap = ram.flatMap { r -> [UInt8] in
            var e = [UInt8](repeating: 0, count: 24)
            e.put32(20, at: 0)                 // size of the rest of the entry
            e.put64(r.start.raw, at: 4)
            e.put64(r.end.raw - r.start.raw, at: 12)
            e.put32(1, at: 20)                 // available RAM
            return e
        }
        page.put32(1 << 0 | 1 << 2 | 1 << 6 | (moduleSize > 0 ? 1 << 3 : 0), at: 0)
        page.put32(Self.memLowerKiB, at: 4)
        page.put32(UInt32(truncatingIfNeeded: (min(low, 1 << 32) - 0x10_0000) >> 10), at: 8)
        page.put32(UInt32(infoAddress + 0x1000), at: 16)
        if moduleSize > 0 {
            page.put32(1, at: 20)
            page.put32(UInt32(infoAddress) + UInt32(moduleEntry), at: 24)
            page.put32(UInt32(module), at: moduleEntry)
            page.put32(UInt32(moduleEnd), at: moduleEntry + 4)
            page.put32(UInt32(infoAddress) + UInt32(moduleName), at: moduleEntry + 8)
            let name = Array((modulePath ?? "").utf8.split(separator: UInt8(ascii: "/")).last ?? [])
            page.replaceSubrange(moduleName..<moduleName + min(name.count, 0x7ff), with: name.prefix(0x7ff))
        }
        page.put32(UInt32(mmap.count), at: 44)
        page.put32(UInt32(infoAddress) + UInt32(mmapOffset), at: 48)
        page.replaceSubrange(mmapOffset..<mmapOffset + mmap.count, with: mmap)
        page.replaceSubrange(0x1000..<0x1000 + line.count, with: line)

        self.kernel = kernel
        self.ram = ram
        moduleAddress = module
        self.moduleSize = moduleSize
        self.infoAddress = infoAddress
        info = page
        placements = places
    }
}

fileprivate extension [UInt8] {
    func u16(at o: Int) -> UInt16 { UInt16(self[o]) | UInt16(self[o + 1]) << 8 }
    func u32(at o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[o + $1]) << (8 * UInt32($1)) } }
    mutating func put32(_ v: UInt32, at o: Int) { for i in 0..<4 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    mutating func put64(_ v: UInt64, at o: Int) { for i in 0..<8 { self[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
}
