import AxAddrSpace

/// A HAL over a private arena that counts frames, remembers TLB invalidations, detects
/// double frees, poisons freed frames (so that a stale pointer into one shows up) and can be
/// told to fail the Nth allocation from now.
final class CountingHAL: NestedMemoryHAL {
    let base: UnsafeMutableRawPointer
    let frames: Int
    /// Host-physical addresses start at 0x1000 so that no valid frame is 0.
    let physBase: UInt64 = 0x1000
    private var free: [Int]
    private var inUse: Set<Int> = []
    private(set) var allocations = 0
    private(set) var deallocations = 0
    private(set) var invalidations: [TLBInvalidation] = []
    /// Allocations left before every further one fails (nil: never fail).
    var failAfter: Int?

    init(frames: Int = 4096) {
        self.frames = frames
        base = UnsafeMutableRawPointer.allocate(byteCount: frames * 4096, alignment: 4096)
        // Dirty the arena so that missing zeroing shows up.
        base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: frames * 4096)
        free = Array((0..<frames).reversed())
    }
    deinit { base.deallocate() }

    var framesInUse: Int { inUse.count }

    private func take() -> Bool {
        if let n = failAfter {
            if n == 0 { return false }
            failAfter = n - 1
        }
        return true
    }
    func allocFrame() -> HostPhysAddr? {
        guard take(), let i = free.popLast() else { return nil }
        inUse.insert(i)
        allocations += 1
        return HostPhysAddr(physBase + UInt64(i) * 4096)
    }
    func allocContiguousFrames(count: Int, alignment: UInt64) -> HostPhysAddr? {
        guard take() else { return nil }
        var start = 0
        while start + count <= frames {
            let pa = physBase + UInt64(start) * 4096
            if pa % alignment == 0, (start..<start + count).allSatisfy({ !inUse.contains($0) }) {
                for i in start..<start + count { inUse.insert(i); free.removeAll { $0 == i } }
                allocations += count
                return HostPhysAddr(pa)
            }
            start += 1
        }
        return nil
    }
    func deallocFrame(_ frame: HostPhysAddr) {
        let i = Int((frame.raw - physBase) / 4096)
        precondition(inUse.remove(i) != nil, "double or foreign free of \(frame)")
        (base + i * 4096).initializeMemory(as: UInt8.self, repeating: 0xA5, count: 4096)
        free.append(i)
        deallocations += 1
    }
    func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr {
        HostVirtAddr(UInt64(UInt(bitPattern: base)) + pa.raw - physBase)
    }
    func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr {
        HostPhysAddr(va.raw - UInt64(UInt(bitPattern: base)) + physBase)
    }
    func invalidateTLB(_ op: TLBInvalidation) { invalidations.append(op) }
    func resetInvalidations() { invalidations.removeAll() }

    /// Bytes of frame `pa`, for checking contents.
    func bytes(_ pa: HostPhysAddr) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: physToVirt(pa.alignedDown(4096)).pointer, count: 4096)
    }
}
