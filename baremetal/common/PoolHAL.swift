// The bare-metal HAL: frames from a static pool, identity-mapped (the hypervisor runs with
// its MMU off, so host-physical = host-virtual). Shared by the AArch64 and RISC-V hypervisors.

@_extern(c, "pool_base") func pool_base() -> UnsafeMutableRawPointer
@_extern(c, "pool_size") func pool_size() -> UInt64

final class PoolHAL: NestedMemoryHAL {
    let base: UInt64
    let end: UInt64
    private var next: UInt64
    private var free: [UInt64] = []
    private(set) var inUse = 0
    /// Runs the architecture's TLB maintenance for the library's request.
    let invalidate: (TLBInvalidation) -> Void

    init(invalidate: @escaping (TLBInvalidation) -> Void) {
        base = UInt64(UInt(bitPattern: pool_base()))
        end = base + pool_size()
        next = base
        self.invalidate = invalidate
    }

    func allocFrame() -> HostPhysAddr? {
        if let f = free.popLast() { inUse += 1; return HostPhysAddr(f) }
        guard next + 4096 <= end else { return nil }
        defer { next += 4096 }
        inUse += 1
        return HostPhysAddr(next)
    }
    func allocContiguousFrames(count: Int, alignment: UInt64) -> HostPhysAddr? {
        let start = (next + alignment - 1) & ~(alignment - 1)
        guard start + UInt64(count) * 4096 <= end else { return nil }
        var gap = next
        while gap < start { free.append(gap); gap += 4096 }  // keep the skipped frames
        next = start + UInt64(count) * 4096
        inUse += count
        return HostPhysAddr(start)
    }
    func deallocFrame(_ frame: HostPhysAddr) {
        inUse -= 1
        free.append(frame.raw)
    }
    func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr { HostVirtAddr(pa.raw) }
    func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr { HostPhysAddr(va.raw) }
    func invalidateTLB(_ op: TLBInvalidation) { invalidate(op) }
}

/// One test area of the guest.
struct GuestArea {
    var gpa: UInt64
    var size: UInt64
    var flags: MappingFlags
    var populate: Bool
}
