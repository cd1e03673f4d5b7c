// libFuzzer target: the arm64 Image parser with its gzip inflater, and the arm64 Linux boot
// planner (`ArmKernelImage(bytes:inflateLimit:)`, `Inflate`, `ArmLinuxPlan`,
// Sources/AxVMM/AArch64/). Built against the AxVMM module by scripts/fuzz.sh.
//
// Input: 16 bytes of parameters, then the kernel file:
//   byte 0     how the file is given: 0 as is; 1 wrapped here in a valid gzip member of stored
//              blocks (the inflater must give it back exactly); 2 after a 10-byte gzip
//              header, as a raw deflate stream with whatever trailer follows (hostile input
//              for the inflater); 3 as 0
//   byte 1-2   guest RAM: 4 + (u16 % 4093) MiB
//   byte 3-4   command line length (u16), of "a"s; byte 5 bit 0: a NUL in it, bit 1: the
//              riscv64 flavour (magic "RSC\x05", RAM at 2 GiB, command lines below 1024 bytes)
//   byte 8-15  initrd size: byte 9 << (byte 8 % 40)
//
// It must never crash. Every accepted Image: at least the 64-byte header, the flavour's magic at 0x38,
// little-endian, text_offset a 4 KiB multiple below 1 GiB, image_size at least the Image; a
// stored-block gzip wrapper inflates to exactly the file. Every accepted plan: the kernel at
// RAM + text_offset (RAM starts 2 MiB aligned) for image_size bytes, the device tree in the
// last 2 MiB, the initrd page-aligned between them, each inside RAM and none overlapping.
// Every refusal is a LinuxBootError (typed throws) of the kinds the planner gives.

import AxAddrSpace
import AxVMM

/// CRC-32 as gzip's trailer has it (bitwise: the fuzz target's own, independent of the parser's).
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xffff_ffff
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
    }
    return c ^ 0xffff_ffff
}

func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }

/// `data` as one gzip member of stored blocks (RFC 1951 §3.2.4), at most 65535 bytes each.
func storedGzip(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
    var i = 0
    repeat {
        let n = min(65535, data.count - i)
        out.append(i + n == data.count ? 1 : 0)  // BFINAL, BTYPE 00, then byte-aligned
        out += [UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8(~n >> 8 & 0xff)]
        out += data[i..<(i + n)]
        i += n
    } while i < data.count
    return out + le32(crc32(data)) + le32(UInt32(truncatingIfNeeded: data.count))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let p = input.u64(), q = input.u64()
    let file = Array(input.bytes.dropFirst(16))
    let mode = p & 3
    let given: [UInt8] = switch mode {
    case 1: storedGzip(file)
    case 2: [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3] + file
    default: file
    }
    let memory = (4 + (p >> 8 & 0xffff) % 4093) << 20
    var text = [UInt8](repeating: 0x61, count: Int(p >> 24 & 0xffff))
    if p >> 40 & 1 != 0 && text.count > 1 { text[1] = 0 }
    let cmdline = String(decoding: text, as: UTF8.self)
    let initrdSize = (q >> 8 & 0xff) << (q % 40)
    let riscv = p >> 41 & 1 == 1
    let flavour: ArmKernelImage.Flavour = riscv ? .riscv64 : .arm64
    let magic: [UInt8] = riscv ? [0x52, 0x53, 0x43, 0x05] : [0x41, 0x52, 0x4d, 0x64]
    let cmdlineLimit = riscv ? 1024 : 2048
    let record = "\(flavour.name), mode \(mode), memory \(hex(memory)), cmdline \(text.count) bytes, initrd \(hex(initrdSize)), \(file.count)-byte file"

    let kernel: ArmKernelImage
    do {
        kernel = try ArmKernelImage(bytes: given, inflateLimit: 1 << 22, flavour: flavour)
    } catch {
        invariant(!error.reason.isEmpty, "\(record): empty refusal")
        invariant(mode != 1 || !error.reason.hasPrefix("gzip-compressed"), "\(record): a valid gzip wrapper refused: \(error.reason)")
        return 0
    }
    let b = kernel.bytes
    invariant(b.count >= 64 && Array(b[0x38..<0x3c]) == magic,
              "\(record): accepted without the header's magic")
    invariant(kernel.flags & 1 == 0 && kernel.textOffset % 4096 == 0 && kernel.textOffset < 1 << 30
              && kernel.imageSize >= UInt64(b.count), "\(record): accepted header \(hex(kernel.textOffset)), \(hex(kernel.imageSize))")
    invariant(kernel.wasCompressed == (mode == 1 || mode == 2), "\(record): compressed \(kernel.wasCompressed)")
    if mode == 1 { invariant(b == file, "\(record): the stored gzip wrapper inflated to \(b.count) other bytes") }

    let ram = riscv ? RiscV64Layout.ramRanges(size: memory) : AArch64Layout.ramRanges(size: memory)
    let plan: ArmLinuxPlan
    do {
        plan = try ArmLinuxPlan(kernel: kernel, ram: ram, cmdline: cmdline, initrdPath: "fuzz/initrd", initrdSize: initrdSize,
                                cmdlineLimit: cmdlineLimit, arch: riscv ? "riscv64" : "arm64")
    } catch {
        switch error {
        case let .overlap(a, c): invariant(a.range.overlaps(c.range), "\(record): \(a) said to overlap \(c)")
        case let .outsideRAM(a, r): invariant(!r.contains { $0.contains(a.range) }, "\(record): \(a) said outside RAM")
        case .initrd, .cmdline, .memory: break
        default: invariant(false, "\(record): plan refused with \(error)")
        }
        return 0
    }
    let start = riscv ? RiscV64Layout.ramBase : AArch64Layout.ramBase, end = start + memory
    invariant(plan.kernelAddress == start + kernel.textOffset && plan.deviceTreeAddress == end - (2 << 20),
              "\(record): kernel at \(hex(plan.kernelAddress)), device tree at \(hex(plan.deviceTreeAddress))")
    invariant(text.count < cmdlineLimit && !text.contains(0), "\(record): command line accepted")
    if initrdSize > 0 {
        let a = plan.initrdAddress
        invariant(a & 0xfff == 0 && a >= plan.kernelAddress + kernel.imageSize && a + initrdSize <= plan.deviceTreeAddress,
                  "\(record): initrd at \(hex(a))")
    }
    for (i, a) in plan.placements.enumerated() {
        invariant(!a.range.isEmpty && ram.contains { $0.contains(a.range) }, "\(record): \(a) outside RAM")
        for c in plan.placements[(i + 1)...] { invariant(!a.range.overlaps(c.range), "\(record): \(a) overlaps \(c)") }
    }
    return 0
}
