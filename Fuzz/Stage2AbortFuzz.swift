// libFuzzer target: `Stage2Abort`, an AArch64 stage 2 abort taken to EL2 (Arm ARM D13.2.37
// ESR_EL2, D13.2.56 HPFAR_EL2). Input: ESR_EL2, HPFAR_EL2, FAR_EL2 (u64 little-endian each;
// missing bytes read as 0). Built with AxAddrSpace/Sources/AxAddrSpace by scripts/fuzz.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let v = Stage2Abort(esr: input.u64(), hpfar: input.u64(), far: input.u64())
    let esr = v.esr
    // Built only when an invariant breaks.
    func record() -> String { "Stage2Abort(esr: \(fuzzHex(esr)), hpfar: \(fuzzHex(v.hpfar)), far: \(fuzzHex(v.far)))" }
    invariant(v == v, "\(record()): not equal to itself")

    // Field extraction: EC is ESR_EL2[31:26], xFSC ISS[5:0], the level xFSC[1:0].
    let ec = (esr >> 26) & 0x3f, fsc = esr & 0x3f
    invariant(v.exceptionClass == ec, "\(record()): exceptionClass \(v.exceptionClass) != \(ec)")
    invariant(v.statusCode == fsc, "\(record()): statusCode \(v.statusCode) != \(fsc)")
    invariant(v.level == Int(fsc & 3) && (0...3).contains(v.level), "\(record()): level \(v.level)")

    // IPA: HPFAR_EL2.FIPA (bits 43:4) is IPA[51:12]; the page offset is FAR_EL2[11:0], or 0
    // when ISS.FnV (bit 10) says FAR_EL2 is not valid. The IPA fits in 52 bits.
    let ipa = v.ipa.raw
    let page = ((v.hpfar >> 4) & 0xff_ffff_ffff) << 12
    invariant(ipa & ~0xfff == page, "\(record()): IPA \(v.ipa) not on page \(fuzzHex(page))")
    invariant(ipa < 1 << 52, "\(record()): IPA \(v.ipa) wider than 52 bits")
    let farValid = esr & (1 << 10) == 0
    if farValid {
        invariant(ipa & 0xfff == v.far & 0xfff, "\(record()): page offset \(fuzzHex(ipa & 0xfff)) is not FAR's")
    } else {
        invariant(ipa & 0xfff == v.far & 0xfff || ipa & 0xfff == 0, "\(record()): FnV set, offset \(fuzzHex(ipa & 0xfff))")
    }

    // Only EC 0x20 (instruction abort, lower EL) and 0x24 (data abort, lower EL) are faults.
    guard let f = v.fault else {
        invariant(ec != 0x20 && ec != 0x24, "\(record()): EC \(fuzzHex(ec)) is an abort but fault is nil")
        return 0
    }
    invariant(ec == 0x20 || ec == 0x24, "\(record()): EC \(fuzzHex(ec)) is not an abort but decoded as \(f)")
    checkCommon(f, gpa: ipa, record())
    // Instruction aborts are fetches; data aborts write iff WnR (ISS bit 6).
    let expected: AccessKind = ec == 0x20 ? .execute : esr & (1 << 6) != 0 ? .write : .read
    invariant(f.access == expected, "\(record()): access \(f.access), expected \(expected)")
    // xFSC 0b0001LL translation, 0b0010LL access flag, 0b0011LL permission; any other status
    // code is none of these three.
    switch fsc >> 2 {
    case 0b0001: invariant(f.kind == .translation, "\(record()): xFSC \(fuzzHex(fsc)) but \(f.kind)")
    case 0b0010: invariant(f.kind == .accessFlag, "\(record()): xFSC \(fuzzHex(fsc)) but \(f.kind)")
    case 0b0011: invariant(f.kind == .permission, "\(record()): xFSC \(fuzzHex(fsc)) but \(f.kind)")
    default:
        invariant(f.kind != .translation && f.kind != .accessFlag && f.kind != .permission,
                  "\(record()): xFSC \(fuzzHex(fsc)) is no translation/AF/permission code but \(f.kind)")
    }
    return 0
}
