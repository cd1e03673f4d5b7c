// The guest's script, the same on every architecture: its areas and the per-case report.

let guestEntry: UInt64 = 0x4000_0000
/// The name of each case of the guest program.
func caseName(_ c: Int) -> StaticString {
    switch c {
    case 1: "fill-lazy"
    case 2: "fill-populated"
    case 3: "exec-lazy"
    case 4: "write-ro"
    case 5: "fetch-xn"
    case 6: "outside"
    default: "?"
    }
}

/// Maps the guest's code and the five test areas (see start.S of each architecture).
func mapGuestAreas<F: NestedPagingFormat>(_ s: AddrSpace<F, PoolHAL>, code: UInt64, codeEnd: UInt64) throws(AddrSpaceError) {
    try s.mapLinear(GuestPhysAddr(guestEntry), to: HostPhysAddr(code), size: codeEnd - code, flags: [.read, .execute])
    try s.mapAlloc(GuestPhysAddr(0x4100_0000), size: 1 << 20, flags: .rw, populate: false)
    try s.mapAlloc(GuestPhysAddr(0x4200_0000), size: 1 << 20, flags: .rw, populate: true)
    try s.mapAlloc(GuestPhysAddr(0x4300_0000), size: 4096, flags: .rwx, populate: false)
    try s.mapAlloc(GuestPhysAddr(0x4400_0000), size: 4096, flags: .read, populate: true)
    try s.mapAlloc(GuestPhysAddr(0x4500_0000), size: 4096, flags: .rw, populate: true)
}

/// What the trap handler must do after the library resolved a fault.
enum TrapAction { case resume, skipAccess, stopGuest, outOfMemory }

/// Counts faults per case and prints the report lines the expectation files check.
struct CaseLog {
    var currentCase = 1
    var caseFaults = 0

    mutating func caseDone(_ tag: String, _ c: Int, result: UInt64) {
        print("\(tag) case \(c) \(caseName(c)): faults \(caseFaults) result \(hex(result))")
        currentCase = c + 1
        caseFaults = 0
    }

    mutating func resolved(_ tag: String, _ fault: NestedPageFault, _ resolution: FaultResolution) -> TrapAction {
        let name = caseName(currentCase)
        switch resolution {
        case .mapped:
            caseFaults += 1
            return .resume
        case .alreadyMapped:
            return .resume
        case .accessDenied:
            print("\(tag) case \(currentCase) \(name): \(fault) -> \(resolution); not mapped")
            return .skipAccess
        case .notInArea:
            print("\(tag) case \(currentCase) \(name): \(fault) -> \(resolution); guest stopped")
            return .stopGuest
        case .outOfMemory:
            return .outOfMemory
        case .unrecoverable:
            print("\(tag) case \(currentCase) \(name): \(fault) -> \(resolution); guest stopped")
            return .stopGuest
        }
    }
}
