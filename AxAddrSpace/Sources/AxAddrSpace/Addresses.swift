// Typed addresses. A guest-physical address and a host-physical address are both 64-bit
// numbers, and mixing them up is the classic hypervisor bug; distinct types make that a
// compile error. Arithmetic is only with byte counts (UInt64), never between two kinds.

/// The operations every address kind shares.
public protocol MemoryAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as a plain number.
    var raw: UInt64 { get }
    init(_ raw: UInt64)
    /// Prefix used when printing, e.g. `GPA`.
    static var prefix: StaticString { get }
}

extension MemoryAddress {
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }
    @inlinable public static func + (a: Self, bytes: UInt64) -> Self { Self(a.raw &+ bytes) }
    @inlinable public static func - (a: Self, bytes: UInt64) -> Self { Self(a.raw &- bytes) }
    /// The distance in bytes from `b` up to `a` (`a` must not be below `b`).
    @inlinable public static func - (a: Self, b: Self) -> UInt64 { a.raw &- b.raw }

    /// Rounds down to a multiple of `alignment` (a power of two).
    @inlinable public func alignedDown(_ alignment: UInt64) -> Self { Self(raw & ~(alignment &- 1)) }
    /// Rounds up to a multiple of `alignment` (a power of two); wraps at the top of the space.
    @inlinable public func alignedUp(_ alignment: UInt64) -> Self {
        Self((raw &+ alignment &- 1) & ~(alignment &- 1))
    }
    @inlinable public func isAligned(_ alignment: UInt64) -> Bool { raw & (alignment &- 1) == 0 }
    @inlinable public var isPageAligned: Bool { isAligned(PageSize.size4K.bytes) }
    /// Offset inside the 4 KiB page.
    @inlinable public var pageOffset: UInt64 { raw & 0xfff }

    public var description: String { "\(Self.prefix):\(hex(raw))" }
}

/// Guest-physical address (IPA on Arm, GPA on x86 and RISC-V).
@frozen public struct GuestPhysAddr: MemoryAddress {
    public let raw: UInt64
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    public static var prefix: StaticString { "GPA" }
}

/// Guest-virtual address.
@frozen public struct GuestVirtAddr: MemoryAddress {
    public let raw: UInt64
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    public static var prefix: StaticString { "GVA" }
}

/// Host-physical address: what a nested page table entry holds.
@frozen public struct HostPhysAddr: MemoryAddress {
    public let raw: UInt64
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    public static var prefix: StaticString { "HPA" }
}

/// Host-virtual address: where the hypervisor itself reaches a host-physical frame.
@frozen public struct HostVirtAddr: MemoryAddress {
    public let raw: UInt64
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    public static var prefix: StaticString { "HVA" }

    /// The address as a raw pointer. Only meaningful in the hypervisor's own address space.
    @inlinable public var pointer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(raw)) }
}

/// A half-open range `[start, end)` of one address kind.
@frozen public struct AddrRange<A: MemoryAddress>: Hashable, Sendable, CustomStringConvertible {
    public let start: A
    public let end: A

    /// `end` below `start` is clamped to an empty range at `start`.
    @inlinable public init(start: A, end: A) {
        self.start = start
        self.end = end < start ? start : end
    }
    /// A range of `size` bytes from `start`; `nil` if it would wrap past 2^64.
    @inlinable public init?(start: A, size: UInt64) {
        let (e, overflow) = start.raw.addingReportingOverflow(size)
        if overflow { return nil }
        self.init(start: start, end: A(e))
    }
    @inlinable public var size: UInt64 { end - start }
    @inlinable public var isEmpty: Bool { start == end }
    /// One unsigned compare: below `start`, the difference wraps to a huge value.
    @inlinable public func contains(_ a: A) -> Bool { a.raw &- start.raw < end.raw &- start.raw }
    @inlinable public func contains(_ r: AddrRange<A>) -> Bool { start <= r.start && r.end <= end }
    @inlinable public func overlaps(_ r: AddrRange<A>) -> Bool { start < r.end && r.start < end }
    public var description: String { "\(A.prefix):[\(hex(start.raw)), \(hex(end.raw)))" }
}

public typealias GuestPhysRange = AddrRange<GuestPhysAddr>
public typealias HostPhysRange = AddrRange<HostPhysAddr>

/// The page sizes a 4 KiB-granule nested table can map with one leaf.
public enum PageSize: UInt64, Sendable, CaseIterable, CustomStringConvertible {
    case size4K = 0x1000
    case size2M = 0x20_0000
    case size1G = 0x4000_0000

    @inlinable public var bytes: UInt64 { rawValue }
    /// log2 of the size.
    @inlinable public var shift: UInt64 {
        switch self {
        case .size4K: 12
        case .size2M: 21
        case .size1G: 30
        }
    }
    public var description: String {
        switch self {
        case .size4K: "4K"
        case .size2M: "2M"
        case .size1G: "1G"
        }
    }
}

/// `0x`-prefixed lower-case hexadecimal, used by every description in the library.
public func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
