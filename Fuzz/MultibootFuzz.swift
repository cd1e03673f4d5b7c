// libFuzzer target: the multiboot kernel parser and its boot plan (`MultibootKernel`,
// `MultibootPlan`, Sources/AxVMM/X86/Multiboot.swift): kvm-unit-tests' x86 format, which
// `axvm boot` takes from any file with a multiboot header. Built against the AxVMM module
// (swift build into .build-fuzz) by scripts/fuzz.sh.
//
// Input: 8 bytes of parameters, then the kernel file:
//   byte 0-1   guest RAM: 4 + (u16 % 4093) MiB (up to 4 GiB and a little beyond the hole)
//   byte 2-5   module size (u32; 0: none)
//   byte 6-7   command line length (u16), of "a"s
//
// It must never crash. Every accepted kernel: each segment inside the file, no more bytes in
// the file than in memory, ending at or below 4 GiB, the entry inside one. Every accepted
// plan: each placement inside one RAM area and no two overlapping; the module on the page
// after the kernel's end, the information block on the page after the module; the block's
// fields (flags, module entry, memory map of the RAM areas, command line = the kernel's path,
// a space and the arguments, NUL-terminated) as the plan says. Every refusal is a
// LinuxBootError (typed throws: nothing else can escape).

import AxAddrSpace
import AxVMM

let path = "fuzz/kernel.flat"

func u32(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }

func check(_ file: [UInt8], memory: UInt64, moduleSize: UInt64, cmdline: String) {
    let kernel: MultibootKernel
    do { kernel = try MultibootKernel(path: path, bytes: file) } catch { return }
    for s in kernel.segments {
        precondition(s.fileOffset >= 0 && UInt64(s.fileOffset) + s.fileSize <= UInt64(file.count), "segment outside the file")
        precondition(s.fileSize <= s.memorySize && s.end <= 1 << 32, "segment sizes")
    }
    precondition(kernel.segments.contains { $0.address <= kernel.entry && kernel.entry < $0.end }, "entry outside")
    let ram = X86Layout.ramRanges(size: memory)
    let plan: MultibootPlan
    do {
        plan = try MultibootPlan(kernel: kernel, ram: ram, cmdline: cmdline, modulePath: "env", moduleSize: moduleSize)
    } catch { return }
    for (i, p) in plan.placements.enumerated() {
        precondition(ram.contains { $0.contains(p.range) }, "\(p) outside RAM")
        for q in plan.placements[(i + 1)...] { precondition(!p.range.overlaps(q.range), "\(p) overlaps \(q)") }
    }
    let end = kernel.segments.map { $0.end }.max() ?? 0
    precondition(plan.moduleAddress == (end + 0xfff) & ~0xfff, "module not on the page after the kernel")
    precondition(plan.infoAddress == (plan.moduleAddress + moduleSize + 0xfff) & ~0xfff, "information not after the module")
    precondition(plan.infoAddress + 0x2000 <= 1 << 32 && plan.info.count == 0x2000, "information block")
    let i = plan.info
    precondition(u32(i, 0) == 0x45 | (moduleSize > 0 ? 8 : 0), "flags")
    precondition(u32(i, 16) == plan.infoAddress + 0x1000, "command line address")
    let line = Array((cmdline.isEmpty ? path : path + " " + cmdline).utf8)
    precondition(Array(i[0x1000..<0x1000 + line.count]) == line && i[0x1000 + line.count] == 0, "command line")
    if moduleSize > 0 {
        precondition(u32(i, 20) == 1 && u32(i, 24) == plan.infoAddress + 0x80, "module count and entry")
        precondition(u32(i, 0x80) == plan.moduleAddress && u32(i, 0x84) == plan.moduleAddress + moduleSize, "module range")
    }
    precondition(u32(i, 44) == UInt64(24 * ram.count), "memory map length")
    for (k, r) in ram.enumerated() {
        let e = 0x100 + 24 * k
        precondition(u32(i, e + 4) | u32(i, e + 8) << 32 == r.start.raw, "memory map base")
        precondition(u32(i, e + 12) | u32(i, e + 16) << 32 == r.end.raw - r.start.raw, "memory map length")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 8 else { return 0 }
    let b = Array(UnsafeBufferPointer(start: data, count: size))
    let memory = (4 + (UInt64(b[0]) | UInt64(b[1]) << 8) % 4093) << 20
    let moduleSize = u32(b, 2)
    let length = Int(b[6]) | Int(b[7]) << 8
    check(Array(b[8...]), memory: memory, moduleSize: moduleSize,
          cmdline: String(decoding: [UInt8](repeating: 0x61, count: length), as: UTF8.self))
    return 0
}
