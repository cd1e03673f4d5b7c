// libFuzzer target: `GStageFault`, a RISC-V guest-page fault trapped to HS-mode (privileged
// spec, H extension: scause 20/21/23, htval = GPA >> 2). Input: scause, htval, stval (u64
// little-endian each; missing bytes read as 0). Built with AxAddrSpace/Sources/AxAddrSpace by
// scripts/fuzz.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let v = GStageFault(scause: input.u64(), htval: input.u64(), stval: input.u64())
    // Built only when an invariant breaks.
    func record() -> String { "GStageFault(scause: \(fuzzHex(v.scause)), htval: \(fuzzHex(v.htval)), stval: \(fuzzHex(v.stval)))" }
    invariant(v == v, "\(record()): not equal to itself")

    // Only the three guest-page-fault causes decode; an interrupt (bit 63) never does.
    let expected: AccessKind? = switch v.scause {
    case 20: .execute
    case 21: .read
    case 23: .write
    default: nil
    }
    guard let f = v.fault else {
        invariant(expected == nil, "\(record()): guest-page fault cause but fault is nil")
        return 0
    }
    invariant(expected != nil, "\(record()): scause \(v.scause) is no guest-page fault but decoded as \(f)")
    invariant(f.access == expected, "\(record()): access \(f.access), expected \(expected!)")
    // GPA = htval << 2 with the low two bits from stval (same page offset); bits of htval
    // shifted out at the top are lost (no real GPA is that wide).
    let gpa = v.htval << 2 | v.stval & 3
    checkCommon(f, gpa: gpa, record())
    invariant(f.gpa.raw >> 2 == v.htval & (UInt64.max >> 2), "\(record()): GPA \(f.gpa) >> 2 is not htval")
    // The cause does not tell a missing page from a permission fault.
    invariant(f.kind == .unknown, "\(record()): kind \(f.kind), the cause cannot tell")
    return 0
}
