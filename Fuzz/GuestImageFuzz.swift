// libFuzzer target: `GuestImage(path:bytes:)` (Sources/AxVMM/GuestImage.swift), the
// guest image header parser. Input: the image file's bytes. Built against the AxVMM module
// (swift build into .build-fuzz) by scripts/fuzz.sh.
//
// It must never crash: it accepts an image exactly when `expectation(_:)`, an independent
// reading of the header format, says so, and otherwise throws `VMMError.guestImage` naming
// the path.

import AxVMM

let path = "fuzz/guest.bin"

/// Header: "AXG1", u32 mode (16 real, 64 long, 0xAA64 AArch64 EL1), u64 entry offset, all little-endian; the
/// entry must lie inside the image; a real-mode image must fit below 0xf000 (its 64 KiB
/// segment at 0x10000, minus the top 4 KiB).
func expectation(_ b: [UInt8]) -> (mode: UInt32, entry: UInt64)? {
    guard b.count >= 16, b[0] == 0x41, b[1] == 0x58, b[2] == 0x47, b[3] == 0x31 else { return nil }
    var mode: UInt32 = 0, entry: UInt64 = 0
    for i in 0..<4 { mode |= UInt32(b[4 + i]) << (8 * UInt32(i)) }
    for i in 0..<8 { entry |= UInt64(b[8 + i]) << (8 * UInt64(i)) }
    guard mode == 16 || mode == 64 || mode == 0xAA64 || mode == 0x5264, entry < UInt64(b.count) else { return nil }
    if mode == 16 && b.count > 0xf000 { return nil }
    return (mode, entry)
}

func check(_ bytes: [UInt8]) -> GuestImage? {
    let expected = expectation(bytes)
    func record() -> String {
        "\(bytes.count)-byte image starting \(bytes.prefix(24).map { String($0, radix: 16) })"
    }
    do {
        let g = try GuestImage(path: path, bytes: bytes)
        guard let expected else {
            invariant(false, "\(record()): accepted (mode \(g.mode), entry \(g.entryOffset)) but the header is invalid")
            return nil
        }
        invariant(g.path == path, "\(record()): path \(g.path)")
        invariant(g.bytes == bytes, "\(record()): bytes changed")
        invariant(g.mode.rawValue == expected.mode, "\(record()): mode \(g.mode), header says \(expected.mode)")
        invariant(g.entryOffset == expected.entry, "\(record()): entry \(g.entryOffset), header says \(expected.entry)")
        invariant(g.entryOffset < UInt64(g.bytes.count), "\(record()): entry \(g.entryOffset) outside the image")
        // Real mode at 0x10000, long mode at 1 MiB, AArch64 at RAM (1 GiB) + 1 MiB, riscv64 at RAM (2 GiB) + 1 MiB.
        let load: UInt64 = g.mode == .real ? 0x10000 : g.mode == .aarch64 ? 0x4010_0000 : g.mode == .riscv64 ? 0x8010_0000 : 0x10_0000
        invariant(g.loadAddress == load, "\(record()): load address \(g.loadAddress)")
        // Loaded, the image stays inside what its mode can reach: the 64 KiB real-mode
        // segment at 0x10000, or the 64 MiB file limit above 1 MiB for long mode.
        if g.mode == .real {
            invariant(g.loadAddress + UInt64(g.bytes.count) <= 0x20000, "\(record()): real-mode image past its segment")
        }
        return g
    } catch {
        guard case let .guestImage(p, reason) = error else {
            invariant(false, "\(record()): unexpected error \(error)")
            return nil
        }
        invariant(expected == nil, "\(record()): rejected (\(reason)) but the header is valid")
        invariant(p == path && !reason.isEmpty, "\(record()): error names \(p), reason \(reason.debugDescription)")
        invariant(error.description.contains(path), "\(record()): description \(error.description) lacks the path")
        return nil
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzInput(data, size).array
    // A valid small real-mode image also checks the size limit: grown to exactly 0xf000
    // bytes it still loads, one byte more it is refused.
    if let g = check(bytes), g.mode == .real, bytes.count < 0xf000 {
        let pad = [UInt8](repeating: 0xf4, count: 0xf000 - bytes.count)
        invariant(check(bytes + pad) != nil, "real-mode image of 0xf000 bytes refused")
        invariant(check(bytes + pad + [0xf4]) == nil, "real-mode image of 0xf001 bytes accepted")
    }
    return 0
}
