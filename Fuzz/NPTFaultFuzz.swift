// libFuzzer target: `NPTFault`, the AMD #NPF intercept record (APM vol. 2 §15.25.6).
// Input: EXITINFO1, EXITINFO2 (u64 little-endian each; missing bytes read as 0). Built with
// AxAddrSpace/Sources/AxAddrSpace by scripts/fuzz.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let v = NPTFault(exitInfo1: input.u64(), exitInfo2: input.u64())
    let e = v.exitInfo1
    // Built only when an invariant breaks.
    func record() -> String { "NPTFault(exitInfo1: \(fuzzHex(e)), exitInfo2: \(fuzzHex(v.exitInfo2)))" }
    let f = v.fault
    checkCommon(f, gpa: v.exitInfo2, record())
    invariant(v == v, "\(record()): not equal to itself")
    invariant(v.duringGuestPageWalk == (e & (1 << 33) != 0), "\(record()): duringGuestPageWalk \(v.duringGuestPageWalk)")

    // Bit 1 R/W (write), bit 4 I/D (instruction fetch); neither: a read. A fetch is never a
    // write, so with both set either reading is accepted.
    let write = e & 2 != 0, fetch = e & 0x10 != 0
    switch (write, fetch) {
    case (false, false): invariant(f.access == .read, "\(record()): no R/W or I/D bit but \(f.access)")
    case (true, false): invariant(f.access == .write, "\(record()): R/W alone but \(f.access)")
    case (false, true): invariant(f.access == .execute, "\(record()): I/D alone but \(f.access)")
    case (true, true): invariant(f.access != .read, "\(record()): R/W and I/D set but \(f.access)")
    }
    // Bit 0 P: a translation existed (permission fault) or not (translation fault). A fault
    // never claims the kind the P bit contradicts; without other error bits it is one of the two.
    let present = e & 1 != 0
    invariant(!(f.kind == .permission && !present), "\(record()): permission fault with P clear")
    invariant(!(f.kind == .translation && present), "\(record()): translation fault with P set")
    invariant(f.kind != .accessFlag, "\(record()): x86 has no access-flag faults")
    if e & 0x08 == 0 {  // no RSV bit: P alone decides
        invariant(f.kind == (present ? .permission : .translation), "\(record()): P \(present) but kind \(f.kind)")
    }
    // Bits 32/33 (final GPA / guest page walk) say where the walk was, not what kind of fault.
    let low = NPTFault(exitInfo1: e & 0xffff_ffff, exitInfo2: v.exitInfo2).fault
    invariant(low == f, "\(record()): bits 63:32 changed the fault (\(low) vs \(f))")
    return 0
}
