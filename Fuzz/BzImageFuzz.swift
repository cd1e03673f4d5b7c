// libFuzzer target: the bzImage setup-header parser and the Linux boot planner
// (`LinuxKernel(path:bytes:)`, `LinuxBootPlan`, Sources/AxVMM/X86/LinuxBoot.swift). Built
// against the AxVMM module (swift build into .build-fuzz) by scripts/fuzz.sh.
//
// Input: 16 bytes of boot parameters, then the kernel file from offset 0x1f1 on (the setup
// header; the boot sector before it is zeros, which the loader does not read):
//   byte 0-1   guest RAM: 4 + (u16 % 65533) MiB (up to 64 GiB), less byte 2 pages (>= 4 MiB)
//   byte 3-4   command line length (u16), of "a"s
//   byte 5     bit 0: a NUL in the command line (2 bytes or more); bit 1: an MP table; bit 2: pad the file with
//              zeros to the length its header promises (at most 1 MiB); bit 3: initrd size
//              from bytes 8-15 as is, else byte 7 << (byte 6 % 64); bit 4: ACPI tables
//              (over bit 1); bits 5-6: CPUs - 1
//   byte 8-15  a raw initrd size (u64 LE)
//
// It must never crash. Every accepted plan: each placement inside one RAM area and no two
// overlapping; the kernel where its header says (1 MiB if relocatable, else pref_address)
// up to max(load, pref_address) + init_size (worked out here in 128 bits); the initrd
// page-aligned, above the kernel, below initrd_addr_max; the boot data at LinuxLayout's
// addresses. Every refusal is a LinuxBootError (typed throws: nothing else can escape) whose
// overlap or outside-RAM claim is true.

import AxAddrSpace
import AxVMM

let path = "fuzz/bzImage"

/// Little-endian field of the file, zero past its end (the parser refuses short files first).
func field(_ b: [UInt8], _ offset: Int, _ size: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<size where offset + i < b.count { v |= UInt64(b[offset + i]) << (8 * UInt64(i)) }
    return v
}

struct Parameters {
    var memory: UInt64
    var cmdline: String
    var firmware: FirmwareTables
    var cpus: Int
    var pad: Bool
    var initrdSize: UInt64

    init(_ p: UInt64, _ raw: UInt64) {
        let mib = 4 + (p & 0xffff) % 65533
        let less = (p >> 16 & 0xff) << 12
        memory = mib << 20 >= (4 << 20) + less ? (mib << 20) - less : 4 << 20
        let flags = p >> 40 & 0xff
        let length = Int(p >> 24 & 0xffff)
        // From bytes (String(repeating:) appends one copy at a time: most of the run time).
        var text = [UInt8](repeating: 0x61, count: length)
        if flags & 1 != 0 && length > 1 { text[1] = 0 }
        cmdline = String(decoding: text, as: UTF8.self)
        firmware = flags & 16 != 0 ? .acpi : flags & 2 != 0 ? .mpTable : .none
        cpus = 1 + Int(flags >> 5 & 3)
        pad = flags & 4 != 0
        initrdSize = flags & 8 != 0 ? raw : (p >> 56) << (p >> 48 & 63)
    }
}

func check(_ image: [UInt8], _ q: Parameters) {
    let ram = X86Layout.ramRanges(size: q.memory)
    func record() -> String {
        "memory \(hex(q.memory)), cmdline \(q.cmdline.utf8.count) bytes, initrd \(hex(q.initrdSize)), firmware \(q.firmware) for \(q.cpus) CPUs, "
            + "\(image.count)-byte file, header \(image[0x1f1..<min(image.count, 0x268)].map { String($0, radix: 16) })"
    }
    let kernel: LinuxKernel
    do {
        kernel = try LinuxKernel(path: path, bytes: image)
    } catch {
        guard case let .kernel(p, reason) = error else { invariant(false, "\(record()): kernel refused with \(error)"); return }
        invariant(p == path && !reason.isEmpty, "\(record()): refusal names \(p): \(reason.debugDescription)")
        return
    }
    let plan: LinuxBootPlan
    do {
        plan = try LinuxBootPlan(kernel: kernel, ram: ram, cmdline: q.cmdline, initrdPath: "fuzz/initrd",
                                 initrdSize: q.initrdSize, firmware: q.firmware, cpus: q.cpus)
    } catch {
        switch error {
        case let .overlap(a, b):
            invariant(a.range.overlaps(b.range), "\(record()): refused, \(a) said to overlap \(b)")
        case let .outsideRAM(p, r):
            invariant(r == ram && !r.contains { $0.contains(p.range) }, "\(record()): refused, \(p) said outside RAM")
        case .kernel, .unsupportedKVM, .vmm, .deviceTree:
            invariant(false, "\(record()): plan refused with \(error)")
        case .initrd, .cmdline, .memory:
            break
        }
        invariant(!error.description.isEmpty, "\(record()): empty refusal")
        return
    }

    // The header's own numbers, read here, and the kernel's range in 128 bits.
    let relocatable = field(image, 0x234, 1) != 0
    let pref = field(image, 0x258, 8), initSize = field(image, 0x260, 4)
    let kernelBytes = field(image, 0x1f4, 4) * 16
    let initrdMax = field(image, 0x22c, 4)
    let load: UInt64 = relocatable ? 0x10_0000 : pref
    let end = UInt128(max(load, pref)) + UInt128(initSize)
    invariant(kernel.loadAddress == load && kernel.entryPoint == load + 0x200,
              "\(record()): load \(hex(kernel.loadAddress)), entry \(hex(kernel.entryPoint))")
    invariant(UInt128(kernel.footprintEnd) == end && end >= UInt128(load) + UInt128(kernelBytes),
              "\(record()): footprint end \(hex(kernel.footprintEnd))")

    // Exactly these placements, in this order, where they belong.
    let p = plan.placements
    var names = ["kernel"]
    if q.initrdSize > 0 { names.append("initrd") }
    names += ["GDT", "zero page", "stack", "page tables", "command line"]
    if q.firmware != .none { names.append(q.firmware.placementName) }
    invariant(p.map(\.name) == names, "\(record()): placements \(p)")
    func at(_ name: String) -> GuestPhysRange? { p.first { $0.name == name }?.range }
    func range(_ s: UInt64, _ e: UInt64) -> GuestPhysRange { GuestPhysRange(start: GuestPhysAddr(s), end: GuestPhysAddr(e)) }
    invariant(at("kernel") == range(load, kernel.footprintEnd), "\(record()): kernel placed at \(p[0])")
    invariant(at("GDT") == range(LinuxLayout.gdt, LinuxLayout.gdt + 32)
              && at("zero page") == range(LinuxLayout.zeroPage, LinuxLayout.zeroPage + 4096)
              && at("page tables") == range(LinuxLayout.pml4, LinuxLayout.pageDirectories + 4 * 4096)
              && at("command line") == range(LinuxLayout.cmdline, LinuxLayout.cmdline + UInt64(q.cmdline.utf8.count) + 1),
              "\(record()): boot data placed at \(p)")
    if q.firmware != .none {
        let name = q.firmware.placementName, a = q.firmware == .acpi ? LinuxLayout.acpiTables : LinuxLayout.mpTable
        invariant(at(name) == range(a, a + UInt64(plan.firmwareTables.count)) && !plan.firmwareTables.isEmpty,
                  "\(record()): \(name) placed at \(p)")
    }
    if q.initrdSize > 0 {
        let a = plan.initrdAddress
        invariant(at("initrd") == GuestPhysRange(start: GuestPhysAddr(a), size: q.initrdSize) && a & 0xfff == 0
                  && a >= kernel.footprintEnd && UInt128(a) + UInt128(q.initrdSize) <= UInt128(initrdMax) + 1,
                  "\(record()): initrd at \(hex(a))")
    }
    invariant(q.cmdline.utf8.count <= Int(field(image, 0x238, 4)) && !q.cmdline.utf8.contains(0),
              "\(record()): command line accepted")

    // The property the plan exists for: inside RAM, pairwise disjoint, none empty.
    for (i, a) in p.enumerated() {
        invariant(!a.range.isEmpty && ram.contains { $0.contains(a.range) }, "\(record()): \(a) outside RAM")
        for b in p[(i + 1)...] { invariant(!a.range.overlaps(b.range), "\(record()): \(a) overlaps \(b)") }
    }

    // What the kernel is told agrees with the plan.
    let zero = plan.zeroPage()
    invariant(zero.count == 4096 && field(zero, 0x218, 4) == plan.initrdAddress & 0xffff_ffff
              && field(zero, 0x21c, 4) == q.initrdSize & 0xffff_ffff, "\(record()): zero page")
    invariant(plan.e820.reduce(UInt128(0)) { $0 + UInt128($1.size) } == UInt128(q.memory), "\(record()): e820 \(plan.e820)")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let q = Parameters(input.u64(), input.u64())
    var image = [UInt8](repeating: 0, count: 0x1f1) + Array(input.bytes.dropFirst(16))
    if q.pad {
        // (setup_sects + 1) * 512 + syssize * 16: what the header promises.
        let sects = field(image, 0x1f1, 1)
        let promised = ((sects == 0 ? 4 : sects) + 1) * 512 + field(image, 0x1f4, 4) * 16
        if promised > UInt64(image.count) && promised <= 1 << 20 {
            image += [UInt8](repeating: 0, count: Int(promised) - image.count)
        }
    }
    check(image, q)
    return 0
}
