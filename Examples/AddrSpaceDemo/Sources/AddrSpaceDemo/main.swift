// An address space with one eager and one lazy area over Intel EPT, a guest write that
// faults, the fault resolved, the written byte read back through `translate`, and every
// frame back in the pool at the end. Exits 1 if the library does anything else.
import AxAddrSpace
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Frames from one arena allocated up front; "host-physical" addresses are offsets into it
/// (starting at 0x1000 so that no frame is 0). A real hypervisor hands out memory it owns.
final class ArenaHAL: NestedMemoryHAL {
    let arena: UnsafeMutableRawPointer
    private var free: [UInt64]
    private(set) var inUse = 0

    init(frames: Int) {
        arena = UnsafeMutableRawPointer.allocate(byteCount: frames * 4096, alignment: 4096)
        free = (0..<UInt64(frames)).reversed().map { 0x1000 + $0 * 4096 }
    }
    deinit { arena.deallocate() }

    func allocFrame() -> HostPhysAddr? {
        guard let pa = free.popLast() else { return nil }
        inUse += 1
        return HostPhysAddr(pa)
    }
    func deallocFrame(_ frame: HostPhysAddr) {
        free.append(frame.raw)
        inUse -= 1
    }
    func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr {
        HostVirtAddr(UInt64(UInt(bitPattern: arena)) + pa.raw - 0x1000)
    }
    func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr {
        HostPhysAddr(va.raw - UInt64(UInt(bitPattern: arena)) + 0x1000)
    }
}

func check(_ ok: Bool, _ what: String) {
    guard ok else { print("AddrSpaceDemo: unexpected: \(what)"); exit(1) }
}

let hal = ArenaHAL(frames: 1024)
do {
    let space = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 30, format: EPT(), hal: hal)
    try space.mapAlloc(GuestPhysAddr(0x10_0000), size: 64 << 10, flags: .rwx, populate: true)
    try space.mapAlloc(GuestPhysAddr(0x4000_0000 - (16 << 20)), size: 16 << 20, flags: .rw, populate: false)
    print("areas:")
    for area in space.areas { print("  \(area)") }

    // The guest writes to a lazy page: the hardware reports an EPT violation (a write, no
    // permission present), the VMM decodes it and asks the library to resolve it.
    let gpa = GuestPhysAddr(0x3F12_3456)
    check(space.translate(gpa) == nil, "a lazy page is mapped before its first touch")
    let violation = EPTViolation(qualification: 0b010, guestPhysicalAddress: gpa.raw)
    let resolution = space.handlePageFault(violation.fault, faultAround: 64 << 10)
    print("fault at \(gpa): \(resolution)")
    guard case .mapped(let window, let pages) = resolution else {
        check(false, "the first write to a lazy page is not mapped"); exit(1)
    }
    check(pages == 16 && window.contains(gpa), "fault-around 64 KiB mapped \(pages) pages over \(window)")
    guard let hpa = space.translate(gpa), let p = hal.physToVirt(hpa).pointer else {
        check(false, "no translation after the fault"); exit(1)
    }
    p.storeBytes(of: 0x5A, as: UInt8.self)
    check(space.handlePageFault(violation.fault) == .alreadyMapped, "a second fault allocates again")
    check(space.handlePageFault(GuestPhysAddr(0x2000_0000), access: .read) == .notInArea,
          "a fault outside every area is resolved")

    let s = space.statistics
    print("faults \(s.faults), pages mapped by faults \(s.pagesMappedByFaults), populated \(s.populatedBytes >> 10) KiB, table frames \(s.tableFrames)")
    check(s.populatedBytes == (64 << 10) + (64 << 10), "populated \(s.populatedBytes) bytes")
} catch {
    print("AddrSpaceDemo: \(error)")
    exit(1)
}
// The address space is gone: every guest and table frame is back in the pool.
check(hal.inUse == 0, "\(hal.inUse) frames leaked")
print("all frames returned")
