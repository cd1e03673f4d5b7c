// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// The fields of a bzImage's setup header that a 64-bit loader uses
/// (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"; offsets are file
/// offsets, the same as in the zero page).
public struct LinuxSetupHeader: Sendable, Equatable {
    /// Boot protocol 2.12 (Linux 3.8): xloadflags and the 64-bit entry point.
    public static let minimumVersion: UInt16 = 0x020c
    /// The zero page ends the setup header at 0x290 (struct boot_params, _pad7).
    static let zeroPageHeaderLimit = 0x290
    /// The last field read here: init_size, a u32 at 0x260.
    static let minimumLength = 0x264

    /// Setup sectors after the boot sector (0 means 4).
    public var setupSectors: Int
    /// Protected-mode code size in 16-byte paragraphs (0x1f4).
    public var sysSize: UInt32
    public var version: UInt16
    /// 0x211: bit 0 LOADED_HIGH (a bzImage), bit 5 QUIET, bit 7 CAN_USE_HEAP.
    public var loadFlags: UInt8
    /// Highest address the initrd may end at, minus one (0x22c).
    public var initrdAddressMax: UInt32
    public var kernelAlignment: UInt32
    public var relocatable: Bool
    /// 0x236: bit 0 XLF_KERNEL_64 (64-bit entry at load address + 0x200), bit 1
    /// XLF_CAN_BE_LOADED_ABOVE_4G.
    public var xloadFlags: UInt16
    /// Longest command line, without its NUL (0x238).
    public var cmdlineSize: UInt32
    /// Where a non-relocatable kernel must be loaded (0x258).
    public var preferredAddress: UInt64
    /// Contiguous memory the kernel needs from its runtime start before it reads the memory
    /// map (0x260).
    public var initSize: UInt32
    /// End of the header: 0x202 + the byte at 0x201 (the jump's offset).
    public var headerEnd: Int

    /// Bytes before the protected-mode kernel: the boot sector and the setup sectors (at most
    /// 256 * 512).
    public var setupBytes: Int { (setupSectors + 1) * 512 }
    /// syssize paragraphs: below 2^36, so the product of the 32-bit field cannot overflow.
    public var kernelBytes: Int { Int(sysSize) * 16 }

    /// Whether `b` has the setup header's magic ("HdrS" at 0x202): a bzImage, valid or not.
    public static func isBzImage(_ b: [UInt8]) -> Bool { b.count >= 0x206 && b[0x202..<0x206].elementsEqual("HdrS".utf8) }

    /// Parses and validates the header of `bytes`; `reason` strings name what is wrong.
    public init(parsing b: [UInt8]) throws(LinuxSetupHeader.Invalid) {
        func u8(_ o: Int) -> UInt8 { b[o] }
        func u16(_ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }
        func hex(_ v: some BinaryInteger) -> String { "0x" + String(v, radix: 16) }
        guard b.count >= 0x206 else {
            throw Invalid("not a bzImage: \(b.count) bytes, too short for the boot sector and setup header")
        }
        guard Self.isBzImage(b) else {
            throw Invalid("not a bzImage (nor a multiboot kernel): no \"HdrS\" setup header magic at offset 0x202")
        }
        guard b.count >= Self.minimumLength else {
            throw Invalid("truncated: \(b.count) bytes, shorter than the \(hex(Self.minimumLength))-byte setup header")
        }
        guard u16(0x1fe) == 0xaa55 else {
            throw Invalid("not a bzImage: boot flag \(hex(u16(0x1fe))) at offset 0x1fe, expected 0xaa55")
        }
        version = u16(0x206)
        guard version >= Self.minimumVersion else {
            throw Invalid("boot protocol \(version >> 8).\(version & 0xff) is too old: axvm needs 2.12 or later (64-bit entry point, xloadflags)")
        }
        loadFlags = u8(0x211)
        guard loadFlags & 1 != 0 else { throw Invalid("LOADED_HIGH clear in loadflags: a zImage, not a bzImage") }
        xloadFlags = u16(0x236)
        guard xloadFlags & 1 != 0 else {
            throw Invalid("XLF_KERNEL_64 clear in xloadflags: no 64-bit entry point (a 32-bit kernel?)")
        }
        headerEnd = 0x202 + Int(u8(0x201))
        guard headerEnd >= Self.minimumLength, headerEnd <= Self.zeroPageHeaderLimit else {
            throw Invalid("setup header ends at \(hex(headerEnd)) (0x202 + the jump at 0x201), outside \(hex(Self.minimumLength))...\(hex(Self.zeroPageHeaderLimit))")
        }
        let sects = Int(u8(0x1f1))
        setupSectors = sects == 0 ? 4 : sects
        sysSize = u32(0x1f4)
        initrdAddressMax = u32(0x22c)
        kernelAlignment = u32(0x230)
        relocatable = u8(0x234) != 0
        cmdlineSize = u32(0x238)
        preferredAddress = u64(0x258)
        initSize = u32(0x260)
        guard sysSize > 0 else { throw Invalid("syssize is 0: no protected-mode kernel") }
        guard b.count >= setupBytes + kernelBytes else {
            throw Invalid("truncated: \(b.count) bytes, but the header promises \(setupBytes) bytes of setup and \(kernelBytes) of kernel (\(setupBytes + kernelBytes) in all)")
        }
        guard UInt64(initSize) >= UInt64(kernelBytes) else {
            throw Invalid("init_size \(hex(initSize)) is smaller than the \(kernelBytes)-byte kernel")
        }
        guard kernelAlignment != 0, kernelAlignment & (kernelAlignment - 1) == 0 else {
            throw Invalid("kernel_alignment \(hex(kernelAlignment)) is not a power of two")
        }
    }

    /// A header that fails validation, with the reason.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var reason: String
        init(_ reason: String) { self.reason = reason }
        public var description: String { reason }
    }
}

/// One BIOS e820 memory-map entry (boot_params.e820_table: u64 addr, u64 size, u32 type).
public struct E820Entry: Sendable, Equatable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2 }
    public var address: UInt64
    public var size: UInt64
    public var kind: Kind
    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }
    public var end: UInt64 { address + size }
}

/// Guest-physical layout of a Linux boot: all below 1 MiB except the kernel
/// and the initrd.
public enum LinuxLayout {
    /// GDT: null, null, __BOOT_CS (0x10), __BOOT_DS (0x18), as boot.rst's 64-bit protocol names them.
    public static let gdt: UInt64 = 0x500
    /// The zero page (struct boot_params).
    public static let zeroPage: UInt64 = 0x7000
    /// Initial stack top (the decompressor sets its own at once).
    public static let stack: UInt64 = 0x8ff0
    /// Identity map of the first 4 GiB with 2 MiB pages: PML4, PDPT, four page directories.
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xa000
    public static let pageDirectories: UInt64 = 0xb000
    public static let identityMappedGiB: UInt64 = 4
    public static let cmdline: UInt64 = 0x2_0000
    /// Room for the command line: up to the EBDA.
    public static let cmdlineLimit: UInt64 = ebda - cmdline
    /// Start of the extended BIOS data area: e820 says "reserved" from here to 1 MiB.
    public static let ebda: UInt64 = 0x9_fc00
    public static let highMemory: UInt64 = 0x10_0000
    /// The MP table (`MPTable`): the last KiB of base memory, where Linux looks first after
    /// the EBDA's (inside the e820 "reserved" range).
    public static let mpTable: UInt64 = ebda
    /// The ACPI tables (`ACPITables`), RSDP first: where Linux scans for it (0xe0000–0xfffff,
    /// inside the e820 "reserved" range), and named in the zero page too.
    public static let acpiTables: UInt64 = 0xe_0000
    /// The protected-mode kernel of a relocatable bzImage is loaded at 1 MiB and entered at
    /// +0x200 (startup_64); its decompressor moves it where it wants.
    public static let kernel: UInt64 = 0x10_0000
    public static let entryOffset: UInt64 = 0x200
    /// The 8250's interrupt (COM1).
    public static let serialIRQ: UInt32 = 4
}

extension FirmwareTables {
    /// Where the tables go in guest memory (`LinuxLayout`).
    public var address: UInt64 { self == .mpTable ? LinuxLayout.mpTable : LinuxLayout.acpiTables }
    /// Their name among the boot plan's placements.
    public var placementName: String { self == .mpTable ? "MP table" : "ACPI tables" }
}

/// A bzImage read from disk and validated.
public struct LinuxKernel: Sendable {
    public let path: String
    public let bytes: [UInt8]
    public let header: LinuxSetupHeader

    /// Largest kernel file accepted.
    public static let maxFileSize = 256 << 20

    public init(path: String) throws(LinuxBootError) {
        try self.init(path: path, bytes: Self.read(path))
    }

    /// The kernel file's bytes (a regular file of at most `maxFileSize` bytes).
    static func read(_ path: String) throws(LinuxBootError) -> [UInt8] {
        do {
            return try readRegularFile(path, limit: Self.maxFileSize) { "\($0) bytes, more than the \(Self.maxFileSize >> 20) MiB limit" }
        } catch { throw .kernel(path: path, reason: error.reason) }
    }

    public init(path: String, bytes: [UInt8]) throws(LinuxBootError) {
        let h: LinuxSetupHeader
        do { h = try LinuxSetupHeader(parsing: bytes) } catch { throw .kernel(path: path, reason: error.reason) }
        guard UInt64(h.kernelBytes) > LinuxLayout.entryOffset else {
            throw .kernel(path: path, reason: "syssize \(hex(UInt64(h.sysSize))): a \(h.kernelBytes)-byte kernel has no 64-bit entry point at offset \(hex(LinuxLayout.entryOffset))")
        }
        let load = h.relocatable ? LinuxLayout.kernel : h.preferredAddress
        // pref_address and init_size are the file's: their sum may wrap. The kernel's bytes
        // (kernelBytes <= init_size, checked by the header) and its entry point (+0x200,
        // inside them) start at `load`, at or below `max(load, pref)`, so they end at or
        // below this sum: one checked addition bounds them all.
        guard let end = checkedSum(max(load, h.preferredAddress), UInt64(h.initSize)) else {
            throw .kernel(path: path, reason: "pref_address \(hex(h.preferredAddress)) + init_size \(hex(UInt64(h.initSize))) is past the end of the 64-bit address space")
        }
        header = h
        self.path = path
        self.bytes = bytes
        loadAddress = load
        entryPoint = load + LinuxLayout.entryOffset  // below `end` (above)
        footprintEnd = end
    }

    /// Where the protected-mode kernel goes: 1 MiB if relocatable, else where it was linked.
    public let loadAddress: UInt64
    /// The 64-bit entry point (boot.rst, "64-bit BOOT PROTOCOL").
    public let entryPoint: UInt64
    /// The protected-mode kernel: everything after the setup sectors, syssize paragraphs.
    public var protectedModeKernel: ArraySlice<UInt8> {
        bytes[header.setupBytes..<(header.setupBytes + header.kernelBytes)]
    }
    /// The end of the memory the kernel may use before it reads the e820 map: init_size from
    /// the higher of the load address and its preferred address (the decompressor of a
    /// relocatable kernel runs at or above LOAD_PHYSICAL_ADDR = pref_address). The initrd
    /// goes above it; the plan reserves [loadAddress, footprintEnd) for the kernel.
    public let footprintEnd: UInt64
}

/// Everything a 64-bit Linux boot puts in guest memory, worked out from the kernel header,
/// the RAM areas, the command line and the initrd size, before any memory exists. Pure, so
/// it is tested on any host.
public struct LinuxBootPlan: Sendable {
    public typealias Placement = BootPlacement

    public let kernel: LinuxKernel
    /// The AddrSpace RAM areas, in order.
    public let ram: [GuestPhysRange]
    public let e820: [E820Entry]
    /// The command line with its terminating NUL.
    public let cmdline: [UInt8]
    public let initrdAddress: UInt64
    public let initrdSize: UInt64
    /// The firmware tables that describe the machine (`FirmwareTables`): ACPI at
    /// `LinuxLayout.acpiTables` or the MP table at `LinuxLayout.mpTable`; empty: none.
    public let firmwareTables: [UInt8]
    public let firmware: FirmwareTables
    /// Where `firmwareTables` go.
    public var firmwareAddress: UInt64 { firmware.address }
    /// Everything the boot writes or keeps for the kernel in guest memory: the kernel (its
    /// init_size footprint), the initrd, then the boot data in address order (GDT, zero
    /// page, initial stack, page tables, command line, firmware tables). The plan exists only if each
    /// lies inside one RAM area and no two overlap.
    public let placements: [Placement]

    /// Numbers read from the kernel (and the initrd's size) are hostile: the arithmetic on them
    /// is checked, and a refusal names the value.
    public init(kernel: LinuxKernel, ram: [GuestPhysRange], cmdline: String,
                initrdPath: String? = nil, initrdSize: UInt64 = 0, firmware: FirmwareTables = .acpi,
                cpus: Int = 1, virtio: [VirtioSlot] = []) throws(LinuxBootError) {
        let h = kernel.header
        let text = Array(cmdline.utf8)
        guard !text.contains(0) else { throw .cmdline(reason: "contains a NUL byte") }
        guard text.count <= Int(h.cmdlineSize) else {
            throw .cmdline(reason: "\(text.count) bytes, longer than the \(h.cmdlineSize) bytes this kernel accepts (cmdline_size)")
        }
        guard UInt64(text.count) < LinuxLayout.cmdlineLimit else {
            throw .cmdline(reason: "\(text.count) bytes, longer than axvm's \(LinuxLayout.cmdlineLimit - 1)-byte buffer")
        }
        guard let low = ram.first, low.start.raw == 0 else {
            throw .memory(reason: "no RAM area at guest-physical 0")
        }
        let lowEnd = low.end.raw
        let footprint = kernel.footprintEnd
        guard lowEnd >= footprint else {
            // In MiB rounded up, without the `+ 0xfffff` that wraps near 2^64.
            let mib = footprint >> 20 + (footprint & 0xfffff == 0 ? 0 : 1)
            throw .memory(reason: "RAM below 4 GiB ends at \(lowEnd >> 20) MiB, but this kernel needs RAM up to \(hex(footprint)) (\(mib) MiB: loaded at \(hex(kernel.loadAddress)), init_size \(hex(UInt64(h.initSize))))")
        }
        var address: UInt64 = 0
        if initrdSize > 0 {
            // As high as the header allows (initrd_addr_max is the last byte's address),
            // page-aligned, from the first page boundary above everything the kernel uses
            // before it reads the memory map (init_size need not be page aligned).
            let top = min(lowEnd, UInt64(h.initrdAddressMax) + 1)
            let floor = checkedSum(footprint, 0xfff).map { $0 & ~0xfff } ?? .max
            let free = top > floor ? top - floor : 0
            guard initrdSize <= free else {
                throw .initrd(path: initrdPath ?? "", reason: "\(initrdSize) bytes do not fit in RAM: \(free) bytes free between the kernel's \(hex(floor)) and \(hex(top)) (RAM below 4 GiB or initrd_addr_max \(hex(UInt64(h.initrdAddressMax))))")
            }
            address = (top - initrdSize) & ~0xfff  // at or above `floor`, a page boundary
        }
        let tables: [UInt8]
        switch firmware {
        case .acpi: tables = ACPITables.build(cpus: cpus, at: LinuxLayout.acpiTables, virtio: virtio)
        case .mpTable: tables = MPTable.build(cpus: cpus, at: LinuxLayout.mpTable)
        case .none: tables = []
        }
        var places = [Placement("kernel", kernel.loadAddress, end: footprint)]
        if initrdSize > 0 { places.append(Placement("initrd", address, end: address + initrdSize)) }  // <= top
        let stackPage = LinuxLayout.stack & ~0xfff
        places += [
            Placement("GDT", LinuxLayout.gdt, end: LinuxLayout.gdt + UInt64(Self.gdt.count * 8)),
            Placement("zero page", LinuxLayout.zeroPage, end: LinuxLayout.zeroPage + 0x1000),
            Placement("stack", stackPage, end: stackPage + 0x1000),
            Placement("page tables", LinuxLayout.pml4,
                      end: LinuxLayout.pageDirectories + LinuxLayout.identityMappedGiB * 0x1000),
            Placement("command line", LinuxLayout.cmdline, end: LinuxLayout.cmdline + UInt64(text.count + 1)),
        ]
        if !tables.isEmpty {
            places.append(Placement(firmware.placementName, firmware.address, end: firmware.address + UInt64(tables.count)))
        }
        try BootPlacement.validate(places, ram: ram)
        self.kernel = kernel
        self.ram = ram
        self.cmdline = text + [0]
        self.initrdAddress = address
        self.initrdSize = initrdSize
        self.firmwareTables = tables
        self.firmware = firmware
        placements = places
        e820 = Self.e820Map(ram: ram)
    }

    /// The e820 map for `ram`: every area exactly, as RAM, except that the first area's
    /// [EBDA, 1 MiB) is "reserved" (the BIOS data, video and ROM holes of a PC), so the
    /// entries tile the areas exactly and nothing outside them.
    public static func e820Map(ram: [GuestPhysRange]) -> [E820Entry] {
        var out: [E820Entry] = []
        for r in ram {
            let s = r.start.raw, e = r.end.raw
            if s < LinuxLayout.ebda && e > LinuxLayout.highMemory {
                out.append(E820Entry(address: s, size: LinuxLayout.ebda - s, kind: .ram))
                out.append(E820Entry(address: LinuxLayout.ebda, size: LinuxLayout.highMemory - LinuxLayout.ebda, kind: .reserved))
                out.append(E820Entry(address: LinuxLayout.highMemory, size: e - LinuxLayout.highMemory, kind: .ram))
            } else {
                out.append(E820Entry(address: s, size: e - s, kind: .ram))
            }
        }
        return out
    }

    /// Offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h).
    enum ZeroPage {
        static let acpiRSDPAddress = 0x070
        static let extRamdiskImage = 0x0c0, extRamdiskSize = 0x0c4, extCmdLinePtr = 0x0c8
        static let e820Entries = 0x1e8
        static let header = 0x1f1
        static let vidMode = 0x1fa, typeOfLoader = 0x210, loadFlags = 0x211
        static let ramdiskImage = 0x218, ramdiskSize = 0x21c, heapEndPtr = 0x224, cmdLinePtr = 0x228
        static let e820Table = 0x2d0, e820EntrySize = 20, e820Max = 128
    }

    /// The zero page: the kernel's own setup header (0x1f1 up to its end) with the loader's
    /// fields filled in, the e820 map, the command line and initrd addresses.
    public func zeroPage() -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 4096)
        func put<T: FixedWidthInteger>(_ v: T, at o: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { p[o + i] = b } }
        }
        let h = kernel.header
        for o in ZeroPage.header..<h.headerEnd { p[o] = kernel.bytes[o] }
        put(UInt16(0xffff), at: ZeroPage.vidMode)          // "normal" video mode
        p[ZeroPage.typeOfLoader] = 0xff                     // boot.rst: undefined loader
        p[ZeroPage.loadFlags] = h.loadFlags | 0x80          // CAN_USE_HEAP
        put(UInt16(0xfe00), at: ZeroPage.heapEndPtr)
        put(UInt32(truncatingIfNeeded: LinuxLayout.cmdline), at: ZeroPage.cmdLinePtr)
        put(UInt32(truncatingIfNeeded: LinuxLayout.cmdline >> 32), at: ZeroPage.extCmdLinePtr)
        put(UInt32(truncatingIfNeeded: initrdAddress), at: ZeroPage.ramdiskImage)
        put(UInt32(truncatingIfNeeded: initrdSize), at: ZeroPage.ramdiskSize)
        put(UInt32(truncatingIfNeeded: initrdAddress >> 32), at: ZeroPage.extRamdiskImage)
        put(UInt32(truncatingIfNeeded: initrdSize >> 32), at: ZeroPage.extRamdiskSize)
        if firmware == .acpi { put(LinuxLayout.acpiTables, at: ZeroPage.acpiRSDPAddress) }  // boot protocol 2.14
        let entries = e820.prefix(ZeroPage.e820Max)
        p[ZeroPage.e820Entries] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            let o = ZeroPage.e820Table + i * ZeroPage.e820EntrySize
            put(e.address, at: o)
            put(e.size, at: o + 8)
            put(e.kind.rawValue, at: o + 16)
        }
        return p
    }

    /// GDT (Intel SDM vol. 3A §3.4.5): two null entries, then the flat 64-bit code segment
    /// at selector 0x10 (__BOOT_CS) and the flat data segment at 0x18 (__BOOT_DS).
    public static let gdt: [UInt64] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]

    /// PML4[0] → PDPT; PDPT[i] → page directory i; each directory maps 1 GiB with 2 MiB
    /// pages, P|RW|PS (0x83): the identity map of the first 4 GiB that boot.rst asks for
    /// (kernel, zero page, command line, initrd).
    public static func pageTables() -> (pml4: [UInt64], pdpt: [UInt64], directories: [UInt64]) {
        let n = LinuxLayout.identityMappedGiB
        let pdpt = (0..<n).map { LinuxLayout.pageDirectories + $0 * 0x1000 | 3 }
        let dirs = (0..<n * 512).map { $0 << 21 | 0x83 }
        return ([LinuxLayout.pdpt | 3], pdpt, dirs)
    }
}

enum LinuxBoot {
    /// Registers for the 64-bit entry (boot.rst, "64-bit BOOT PROTOCOL"): long mode with
    /// paging (CR0.PE|PG, CR4.PAE, EFER.LME|LMA), CS = __BOOT_CS, DS/ES/SS = __BOOT_DS,
    /// interrupts off, RSI = the zero page.
    static func setupVCPU(_ vcpu: VCPU, entry: UInt64) throws(KVMError) {
        var sregs = try vcpu.specialRegisters()
        X86Boot.enterLongMode(&sregs, code: 0x10, data: 0x18, gdtBase: LinuxLayout.gdt,
                              gdtLimit: UInt16(LinuxBootPlan.gdt.count * 8 - 1), cr3: LinuxLayout.pml4)
        try vcpu.setSpecialRegisters(sregs)
        var regs = kvm_regs()
        regs.rflags = 2
        regs.rip = entry
        regs.rsp = LinuxLayout.stack
        regs.rsi = LinuxLayout.zeroPage
        try vcpu.setRegisters(regs)
        // MSRs a fresh CPU has (Firecracker's set): SYSENTER and SYSCALL targets cleared,
        // IA32_MISC_ENABLE with fast strings (bit 0), the TSC from 0.
        try vcpu.setMSRs([
            (0x174, 0), (0x175, 0), (0x176, 0),                            // IA32_SYSENTER_CS/ESP/EIP
            (0xc000_0081, 0), (0xc000_0082, 0), (0xc000_0083, 0),        // STAR, LSTAR, CSTAR
            (0xc000_0084, 0), (0xc000_0102, 0),                           // SFMASK, KERNEL_GS_BASE
            (0x10, 0),                                                    // IA32_TSC
            (0x1a0, 1),                                                   // IA32_MISC_ENABLE
        ])
    }
}
#endif
