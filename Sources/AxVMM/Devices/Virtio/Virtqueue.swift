/// A split virtqueue (virtio 1.2 §2.7) read and written through `DeviceMemory`: the driver's
/// descriptor table and available ring, the device's used ring. Everything in them is the
/// guest's and may be hostile: every index, address, length and flag is checked, walks are
/// bounded (a chain by the queue size, an indirect table by its length / 16), arithmetic
/// never traps, and each problem is a `VirtqueueError` naming the value. The transport marks
/// the device broken (DEVICE_NEEDS_RESET) on any of them.
///
/// Ordering (§2.7.13, Linux's virtio_ring barriers): the guest's vCPUs write the rings while
/// a device reads them. An acquire fence follows the read of the available index (entries
/// after it), a release fence precedes the write of the used index (elements before it), and
/// full fences separate writing avail_event or the used index from reading the driver's
/// index or used_event, so no notification or interrupt is lost.

import Synchronization

/// Feature bits the queue itself implements (virtio 1.2 §6).
public enum VirtioFeature {
    /// §2.7.5.3: a descriptor may point to a table of descriptors.
    public static let indirectDescriptors: UInt64 = 1 << 28
    /// §2.7.7, §2.7.10: used_event / avail_event suppress notifications by index.
    public static let eventIndex: UInt64 = 1 << 29
    /// §6.1: a virtio 1.x (non-legacy) device; the virtio-mmio version 2 transport needs it.
    public static let version1: UInt64 = 1 << 32
}

/// Which part of a virtqueue's memory an address belongs to.
public enum VirtqueueArea: Sendable, Equatable, CustomStringConvertible {
    case descriptorTable, availableRing, usedRing, indirectTable
    public var description: String {
        switch self {
        case .descriptorTable: "descriptor table"
        case .availableRing: "available ring"
        case .usedRing: "used ring"
        case .indirectTable: "indirect descriptor table"
        }
    }
}

/// Why a virtqueue cannot be used: the driver broke the split-ring rules (or guest memory
/// failed under them). Each case names the offending value.
public enum VirtqueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// QueueNum is 0, not a power of two, or above QueueNumMax (§2.7: "Queue Size ... a power of 2").
    case badQueueSize(size: UInt32, max: UInt16)
    /// A ring's base is not aligned as §2.7 Table 2.3 requires (16, 2, 4 bytes).
    case misaligned(area: VirtqueueArea, gpa: UInt64)
    /// A ring or table (or part of it) is not guest RAM, or its end overflows 64 bits.
    case areaOutsideRAM(area: VirtqueueArea, gpa: UInt64, length: UInt64)
    /// A buffer a descriptor points to is not guest RAM, or its end overflows.
    case descriptorOutsideRAM(index: UInt16, gpa: UInt64, length: UInt32)
    /// The available index is more than the queue size ahead of what the device consumed.
    case availableIndexJump(lastSeen: UInt16, available: UInt16, size: UInt16)
    /// A head in the available ring is not a descriptor index.
    case headOutOfRange(head: UInt16, size: UInt16)
    /// A descriptor's `next` is past its table (the queue, or an indirect table of `size` entries).
    case nextOutOfRange(index: UInt16, next: UInt16, size: UInt32)
    /// More descriptors than the table holds: the chain loops.
    case chainLoops(head: UInt16, limit: UInt32)
    /// INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated.
    case indirectNotNegotiated(index: UInt16)
    /// An indirect descriptor inside an indirect table (§2.7.5.3.1: MUST NOT).
    case nestedIndirect(index: UInt16)
    /// INDIRECT together with NEXT (§2.7.5.3.1: MUST NOT).
    case indirectWithNext(index: UInt16)
    /// An indirect table whose length is 0, not a multiple of 16, or above the limit.
    case badIndirectLength(index: UInt16, length: UInt32)
    /// A device-readable descriptor after a device-writable one (§2.7.4.2: MUST NOT).
    case readableAfterWritable(index: UInt16)
    /// The chain's buffers add up to more than a used length (32 bits) can describe.
    case chainTooLarge(head: UInt16, bytes: UInt64)
    /// A request to access bytes past the chain's readable or writable part (device bug or
    /// a request shorter than its header).
    case beyondChain(head: UInt16, offset: UInt64, count: Int)
    /// Guest memory could not be made present under a ring or buffer.
    case memory(DeviceMemoryError)
    /// Restored from a snapshot taken while the device was broken (the reason is not kept).
    case brokenInSnapshot

    public var description: String {
        switch self {
        case let .badQueueSize(size, max): "queue size \(size) is not a power of two from 1 to \(max)"
        case let .misaligned(area, gpa): "\(area) at \(hex(gpa)) is misaligned"
        case let .areaOutsideRAM(area, gpa, length): "\(area) at \(hex(gpa)) + \(length) bytes is not guest RAM"
        case let .descriptorOutsideRAM(index, gpa, length): "descriptor \(index): buffer \(hex(gpa)) + \(length) bytes is not guest RAM"
        case let .availableIndexJump(last, avail, size): "available index \(avail) is more than \(size) ahead of \(last)"
        case let .headOutOfRange(head, size): "chain head \(head) is not below the queue size \(size)"
        case let .nextOutOfRange(index, next, size): "descriptor \(index): next \(next) is not below \(size)"
        case let .chainLoops(head, limit): "chain from \(head) is longer than \(limit) descriptors (a loop)"
        case let .indirectNotNegotiated(index): "descriptor \(index) is indirect, but VIRTIO_F_INDIRECT_DESC was not negotiated"
        case let .nestedIndirect(index): "descriptor \(index): an indirect descriptor inside an indirect table"
        case let .indirectWithNext(index): "descriptor \(index): INDIRECT with NEXT"
        case let .badIndirectLength(index, length): "descriptor \(index): indirect table of \(length) bytes"
        case let .readableAfterWritable(index): "descriptor \(index): device-readable after device-writable"
        case let .chainTooLarge(head, bytes): "chain from \(head) has \(bytes) bytes"
        case let .beyondChain(head, offset, count): "chain from \(head): \(count) bytes at \(offset) are past its buffers"
        case let .memory(e): "\(e)"
        case .brokenInSnapshot: "the device was broken when the snapshot was taken"
        }
    }
}

@inline(__always) func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

/// One buffer of a chain: `length` bytes of guest RAM at `gpa`, from descriptor `index` (of
/// the queue's table, or of an indirect table).
public struct VirtqueueSegment: Sendable, Equatable {
    public var gpa: UInt64
    public var length: UInt32
    public var index: UInt16
    public init(gpa: UInt64, length: UInt32, index: UInt16) {
        self.gpa = gpa
        self.length = length
        self.index = index
    }
}

/// A descriptor chain the driver made available: its head (what `addUsed` returns) and its
/// buffers, the device-readable ones first, then the device-writable ones (§2.7.4.2).
public struct DescriptorChain: Sendable, Equatable {
    public var head: UInt16
    public var readable: [VirtqueueSegment] = []
    public var writable: [VirtqueueSegment] = []
    public var readableLength: UInt64 = 0
    public var writableLength: UInt64 = 0
    public init(head: UInt16) { self.head = head }
}

/// Where a queue's three areas are, as the driver configured them (QueueDesc, QueueDriver,
/// QueueDevice), and its size.
public struct VirtqueueLayout: Sendable, Equatable {
    public var size: UInt16
    public var descriptorTable: UInt64
    public var availableRing: UInt64
    public var usedRing: UInt64
    public init(size: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
    }
}

/// A split virtqueue over guest memory. A value: the transport keeps it behind its lock and
/// lends it to the device (`inout`) to pop and complete chains.
public struct Virtqueue: Sendable {
    /// Descriptor flags (§2.7.5).
    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4
    /// Available ring flag VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7).
    static let availNoInterrupt: UInt16 = 1
    /// The largest indirect table accepted, in descriptors (QEMU's VIRTQUEUE_MAX_SIZE).
    public static let maxIndirectDescriptors: UInt32 = 1024

    public let layout: VirtqueueLayout
    public let eventIndex: Bool
    public let indirect: Bool
    let memory: DeviceMemory
    let contains: (@Sendable (UInt64, UInt64) -> Bool)?
    /// The next available-ring slot to consume (free-running, as the ring's idx).
    public internal(set) var lastAvailable: UInt16 = 0
    /// The used index the device has published (free-running).
    public internal(set) var usedIndex: UInt16 = 0
    /// The used index when the driver was last interrupted (EVENT_IDX's old index).
    public internal(set) var signalledUsed: UInt16 = 0

    /// Checks the layout (§2.7: size a power of two up to `maxSize`; Table 2.3 alignments;
    /// every area inside RAM by `contains`, which answers whether [gpa, gpa + length) is RAM;
    /// nil checks each area on first access instead) and makes the queue. `features` are the
    /// negotiated ones.
    public init(layout: VirtqueueLayout, maxSize: UInt16, features: UInt64, memory: DeviceMemory,
                contains: (@Sendable (UInt64, UInt64) -> Bool)? = nil) throws(VirtqueueError) {
        let size = layout.size
        guard size != 0, size <= maxSize, size & (size &- 1) == 0 else {
            throw .badQueueSize(size: UInt32(size), max: maxSize)
        }
        let n = UInt64(size)
        let areas: [(VirtqueueArea, UInt64, UInt64, UInt64)] = [
            (.descriptorTable, layout.descriptorTable, 16 * n, 16),
            (.availableRing, layout.availableRing, 6 + 2 * n, 2),
            (.usedRing, layout.usedRing, 6 + 8 * n, 4),
        ]
        for (area, gpa, length, align) in areas {
            guard gpa % align == 0 else { throw .misaligned(area: area, gpa: gpa) }
            let (_, overflow) = gpa.addingReportingOverflow(length)
            guard !overflow, contains?(gpa, length) ?? true else { throw .areaOutsideRAM(area: area, gpa: gpa, length: length) }
        }
        self.layout = layout
        self.eventIndex = features & VirtioFeature.eventIndex != 0
        self.indirect = features & VirtioFeature.indirectDescriptors != 0
        self.memory = memory
        self.contains = contains
    }

    /// Puts back the device's progress (a restored snapshot).
    public mutating func restore(lastAvailable: UInt16, usedIndex: UInt16, signalledUsed: UInt16) {
        self.lastAvailable = lastAvailable
        self.usedIndex = usedIndex
        self.signalledUsed = signalledUsed
    }

    // MARK: Ring access

    func load<T: FixedWidthInteger>(_ area: VirtqueueArea, _ gpa: UInt64, as: T.Type) throws(VirtqueueError) -> T {
        var v = T.zero
        var failure: DeviceMemoryError?
        withUnsafeMutableBytes(of: &v) { b in
            do throws(DeviceMemoryError) { try memory.read(gpa, b) } catch { failure = error }
        }
        if let failure { throw Self.mapped(failure, area) }
        return T(littleEndian: v)
    }

    func store<T: FixedWidthInteger>(_ area: VirtqueueArea, _ gpa: UInt64, _ value: T) throws(VirtqueueError) {
        var failure: DeviceMemoryError?
        withUnsafeBytes(of: value.littleEndian) { b in
            do throws(DeviceMemoryError) { try memory.write(gpa, b) } catch { failure = error }
        }
        if let failure { throw Self.mapped(failure, area) }
    }

    static func mapped(_ e: DeviceMemoryError, _ area: VirtqueueArea) -> VirtqueueError {
        switch e {
        case let .outsideRAM(gpa, length): .areaOutsideRAM(area: area, gpa: gpa, length: length)
        case .failed: .memory(e)
        }
    }

    var availableIndexAddress: UInt64 { layout.availableRing &+ 2 }
    /// used_event, after the available ring's entries (§2.7.6).
    var usedEventAddress: UInt64 { layout.availableRing &+ 4 &+ 2 &* UInt64(layout.size) }
    /// avail_event, after the used ring's elements (§2.7.8).
    var availEventAddress: UInt64 { layout.usedRing &+ 4 &+ 8 &* UInt64(layout.size) }

    /// How many chains the driver has made available and the device not yet consumed.
    public func pending() throws(VirtqueueError) -> UInt16 {
        let available = try load(.availableRing, availableIndexAddress, as: UInt16.self)
        atomicMemoryFence(ordering: .acquiring)  // the ring entries below it after the index
        let count = available &- lastAvailable
        guard count <= layout.size else {
            throw .availableIndexJump(lastSeen: lastAvailable, available: available, size: layout.size)
        }
        return count
    }

    /// The next available chain, or nil if the driver has made none available. With
    /// EVENT_IDX, publishes avail_event = the next slot, so the driver notifies when it
    /// makes that one available (§2.7.10).
    public mutating func pop() throws(VirtqueueError) -> DescriptorChain? {
        guard try pending() > 0 else { return nil }
        let slot = UInt64(lastAvailable % layout.size)
        let head = try load(.availableRing, layout.availableRing &+ 4 &+ 2 &* slot, as: UInt16.self)
        let chain = try walk(head: head)
        lastAvailable &+= 1
        if eventIndex {
            try store(.usedRing, availEventAddress, lastAvailable)
            // avail_event out before the next read of the available index: else a driver
            // adding a chain now may read the old avail_event and not notify.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        return chain
    }

    /// Reads the chain from `head`, following NEXT and at most one indirect table, bounded by
    /// the queue size (then the table's length / 16).
    func walk(head: UInt16) throws(VirtqueueError) -> DescriptorChain {
        guard head < layout.size else { throw .headOutOfRange(head: head, size: layout.size) }
        var chain = DescriptorChain(head: head)
        var table = layout.descriptorTable
        var tableSize = UInt32(layout.size)
        var area = VirtqueueArea.descriptorTable
        var inIndirect = false
        var index = head
        var seen: UInt32 = 0
        while true {
            seen += 1
            guard seen <= tableSize else { throw .chainLoops(head: head, limit: tableSize) }
            let at = table &+ 16 &* UInt64(index)
            let addr = try load(area, at, as: UInt64.self)
            let len = try load(area, at &+ 8, as: UInt32.self)
            let flags = try load(area, at &+ 12, as: UInt16.self)
            let next = try load(area, at &+ 14, as: UInt16.self)
            if flags & Self.flagIndirect != 0 {
                guard indirect else { throw .indirectNotNegotiated(index: index) }
                guard !inIndirect else { throw .nestedIndirect(index: index) }
                guard flags & Self.flagNext == 0 else { throw .indirectWithNext(index: index) }
                guard len != 0, len % 16 == 0, len / 16 <= Self.maxIndirectDescriptors else {
                    throw .badIndirectLength(index: index, length: len)
                }
                let (_, overflow) = addr.addingReportingOverflow(UInt64(len))
                guard !overflow, contains?(addr, UInt64(len)) ?? true else {
                    throw .areaOutsideRAM(area: .indirectTable, gpa: addr, length: UInt64(len))
                }
                table = addr
                tableSize = len / 16
                area = .indirectTable
                inIndirect = true
                index = 0
                seen = 0
                continue
            }
            let (_, overflow) = addr.addingReportingOverflow(UInt64(len))
            guard !overflow, contains?(addr, UInt64(len)) ?? true else {
                throw .descriptorOutsideRAM(index: index, gpa: addr, length: len)
            }
            let segment = VirtqueueSegment(gpa: addr, length: len, index: index)
            if flags & Self.flagWrite != 0 {
                chain.writable.append(segment)
                chain.writableLength += UInt64(len)  // ≤ 2^16 descriptors × 2^32: no overflow
            } else {
                guard chain.writable.isEmpty else { throw .readableAfterWritable(index: index) }
                chain.readable.append(segment)
                chain.readableLength += UInt64(len)
            }
            let total = chain.readableLength + chain.writableLength
            guard total <= UInt64(UInt32.max) else { throw .chainTooLarge(head: head, bytes: total) }
            guard flags & Self.flagNext != 0 else { return chain }
            guard UInt32(next) < tableSize else { throw .nextOutOfRange(index: index, next: next, size: tableSize) }
            index = next
        }
    }

    /// Returns a chain to the driver: the used element (head, bytes written), then the used
    /// index (§2.7.8).
    public mutating func addUsed(head: UInt16, written: UInt32) throws(VirtqueueError) {
        let slot = UInt64(usedIndex % layout.size)
        let element = layout.usedRing &+ 4 &+ 8 &* slot
        try store(.usedRing, element, UInt32(head))
        try store(.usedRing, element &+ 4, written)
        usedIndex &+= 1
        atomicMemoryFence(ordering: .releasing)  // the element before the index that publishes it
        try store(.usedRing, layout.usedRing &+ 2, usedIndex)
    }

    /// Whether the driver wants an interrupt for what was used since the last one: with
    /// EVENT_IDX, vring_need_event(used_event, new, old) (§2.7.10, Linux's
    /// include/uapi/linux/virtio_ring.h); otherwise unless the driver set NO_INTERRUPT.
    public mutating func needsInterrupt() throws(VirtqueueError) -> Bool {
        let old = signalledUsed
        let new = usedIndex
        signalledUsed = new
        guard old != new else { return false }
        // The used index out before reading what the driver asks for (Linux: virtio_mb).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let event = try load(.availableRing, usedEventAddress, as: UInt16.self)
            return Self.needEvent(event: event, new: new, old: old)
        }
        let flags = try load(.availableRing, layout.availableRing, as: UInt16.self)
        return flags & Self.availNoInterrupt == 0
    }

    /// vring_need_event: the event index lies in (old, new].
    public static func needEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    // MARK: Buffer access

    /// Copies `into.count` bytes of the chain's readable buffers, from byte `offset` of them.
    public func read(_ chain: DescriptorChain, offset: UInt64, into: UnsafeMutableRawBufferPointer) throws(VirtqueueError) {
        _ = try copy(chain, chain.readable, chain.readableLength, offset: offset, count: into.count) { gpa, at, n throws(DeviceMemoryError) in
            try memory.read(gpa, UnsafeMutableRawBufferPointer(rebasing: into[at..<at + n]))
            return true
        }
    }

    /// Copies `from` into the chain's writable buffers, from byte `offset` of them.
    public func write(_ chain: DescriptorChain, offset: UInt64, from: UnsafeRawBufferPointer) throws(VirtqueueError) {
        _ = try copy(chain, chain.writable, chain.writableLength, offset: offset, count: from.count) { gpa, at, n throws(DeviceMemoryError) in
            try memory.write(gpa, UnsafeRawBufferPointer(rebasing: from[at..<at + n]))
            return true
        }
    }

    /// The chain's writable (`deviceWrites`) or readable buffers from byte `offset`, `count`
    /// bytes, as guest RAM itself (`DeviceMemory.direct`): `body` gets each contiguous piece
    /// in order and returns false to stop; the result says whether none did.
    public func withBuffers(_ chain: DescriptorChain, deviceWrites: Bool, offset: UInt64, count: Int,
                            _ body: (UnsafeMutableRawBufferPointer) -> Bool) throws(VirtqueueError) -> Bool {
        let (segments, total) = deviceWrites ? (chain.writable, chain.writableLength) : (chain.readable, chain.readableLength)
        return try copy(chain, segments, total, offset: offset, count: count) { gpa, _, n throws(DeviceMemoryError) in
            try memory.direct(gpa, n, deviceWrites, body)
        }
    }

    /// Walks `count` bytes of `segments` from byte `offset`, calling `move` with each part's
    /// guest address, the bytes done before it and its length, until it returns false.
    func copy(_ chain: DescriptorChain, _ segments: [VirtqueueSegment], _ total: UInt64, offset: UInt64, count: Int,
              _ move: (UInt64, Int, Int) throws(DeviceMemoryError) -> Bool) throws(VirtqueueError) -> Bool {
        guard offset <= total, UInt64(count) <= total - offset else {
            throw .beyondChain(head: chain.head, offset: offset, count: count)
        }
        var skip = offset
        var done = 0
        for s in segments where done < count {
            let length = UInt64(s.length)
            if skip >= length { skip -= length; continue }
            let n = Int(min(length - skip, UInt64(count - done)))
            do throws(DeviceMemoryError) {
                guard try move(s.gpa &+ skip, done, n) else { return false }
            } catch {
                switch error {
                case .outsideRAM: throw .descriptorOutsideRAM(index: s.index, gpa: s.gpa, length: s.length)
                case .failed: throw .memory(error)
                }
            }
            skip = 0
            done += n
        }
        return true
    }
}

/// `Array.withUnsafe(Mutable)Bytes` with the body's `VirtqueueError` kept typed (the
/// standard ones rethrow untyped).
func withBytes<R>(_ a: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(VirtqueueError) -> R) throws(VirtqueueError) -> R {
    let r: Result<R, VirtqueueError> = a.withUnsafeMutableBytes { b in
        do throws(VirtqueueError) { return .success(try body(b)) } catch { return .failure(error) }
    }
    return try r.get()
}
