// libFuzzer target: `EPTViolation`, the Intel EPT-violation exit record (SDM vol. 3C §28.2.1
// table 28-7). Input: exit qualification, guest-physical address (u64 little-endian each;
// missing bytes read as 0). Built with AxAddrSpace/Sources/AxAddrSpace by scripts/fuzz.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let v = EPTViolation(qualification: input.u64(), guestPhysicalAddress: input.u64())
    let q = v.qualification
    // Built only when an invariant breaks.
    func record() -> String { "EPTViolation(qualification: \(fuzzHex(q)), guestPhysicalAddress: \(fuzzHex(v.guestPhysicalAddress)))" }
    let f = v.fault
    checkCommon(f, gpa: v.guestPhysicalAddress, record())
    invariant(v == v, "\(record()): not equal to itself")

    // Bits 2:0: data read, data write, instruction fetch. The hardware sets exactly one;
    // then the access is that one. With several set, it is one of them; with none, a read.
    let read = q & 1 != 0, write = q & 2 != 0, fetch = q & 4 != 0
    switch (read, write, fetch) {
    case (_, false, false): invariant(f.access == .read, "\(record()): no write/fetch bit but \(f.access)")
    case (false, true, false): invariant(f.access == .write, "\(record()): write bit alone but \(f.access)")
    case (false, false, true): invariant(f.access == .execute, "\(record()): fetch bit alone but \(f.access)")
    default:
        invariant((f.access == .read && read) || (f.access == .write && write) || (f.access == .execute && fetch),
                  "\(record()): \(f.access) is none of the access bits set")
    }
    // Bits 5:3 (R/W/X of the translation) and bit 6 (user execute): all clear means the GPA
    // was not mapped (translation fault), any set means it was (permission fault).
    let mapped = q & 0x78 != 0
    invariant(f.kind == (mapped ? .permission : .translation),
              "\(record()): bits 6:3 = \(fuzzHex((q >> 3) & 0xf)) but kind \(f.kind)")
    // The other qualification bits (GLA valid, NMI unblocking, ...) change nothing.
    let plain = EPTViolation(qualification: q & 0x7f, guestPhysicalAddress: v.guestPhysicalAddress).fault
    invariant(plain == f, "\(record()): bits above 6 changed the fault (\(plain) vs \(f))")
    return 0
}
