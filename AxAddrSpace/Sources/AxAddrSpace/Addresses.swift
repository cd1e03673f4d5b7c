// Typed addresses. A guest-physical address and a host-physical address are both 64-bit
// numbers, and mixing them up is the classic hypervisor bug; distinct types make that a
// compile error. Arithmetic is only with byte counts (UInt64), never between two kinds.

/// The operations every address kind shares.
public protocol MemoryAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as a plain number.
    var raw: UInt64 { get }
    /// The address with this numeric value.
    init(_ raw: UInt64)
    /// Prefix used when printing, e.g. `GPA`.
    static var prefix: StaticString { get }
}

extension MemoryAddress {
    /// Orders addresses of one kind by their numeric value.
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }
    /// The address `bytes` above `a` (wrapping at 2^64).
    @inlinable public static func + (a: Self, bytes: UInt64) -> Self { Self(a.raw &+ bytes) }
    /// The address `bytes` below `a` (wrapping at 0).
    @inlinable public static func - (a: Self, bytes: UInt64) -> Self { Self(a.raw &- bytes) }
    /// The distance in bytes from `b` up to `a` (`a` must not be below `b`).
    @inlinable public static func - (a: Self, b: Self) -> UInt64 { a.raw &- b.raw }

    /// Rounds down to a multiple of `alignment` (a power of two).
    @inlinable public func alignedDown(_ alignment: UInt64) -> Self { Self(raw & ~(alignment &- 1)) }
    /// Rounds up to a multiple of `alignment` (a power of two); wraps at the top of the space.
    @inlinable public func alignedUp(_ alignment: UInt64) -> Self {
        Self((raw &+ alignment &- 1) & ~(alignment &- 1))
    }
    /// Whether the address is a multiple of `alignment` (a power of two).
    @inlinable public func isAligned(_ alignment: UInt64) -> Bool { raw & (alignment &- 1) == 0 }
    /// Whether the address starts a 4 KiB page.
    @inlinable public var isPageAligned: Bool { isAligned(PageSize.size4K.bytes) }
    /// Offset inside the 4 KiB page.
    @inlinable public var pageOffset: UInt64 { raw & 0xfff }

    /// The prefix and the address in hexadecimal, e.g. `GPA:0x40000000`.
    public var description: String { "\(Self.prefix):\(hex(raw))" }
}

/// Guest-physical address (IPA on Arm, GPA on x86 and RISC-V).
@frozen public struct GuestPhysAddr: MemoryAddress {
    /// The address as a plain number.
    public let raw: UInt64
    /// The guest-physical address with this numeric value.
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    /// `GPA`.
    public static var prefix: StaticString { "GPA" }
}

/// Guest-virtual address.
@frozen public struct GuestVirtAddr: MemoryAddress {
    /// The address as a plain number.
    public let raw: UInt64
    /// The guest-virtual address with this numeric value.
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    /// `GVA`.
    public static var prefix: StaticString { "GVA" }
}

/// Host-physical address: what a nested page table entry holds.
@frozen public struct HostPhysAddr: MemoryAddress {
    /// The address as a plain number.
    public let raw: UInt64
    /// The host-physical address with this numeric value.
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    /// `HPA`.
    public static var prefix: StaticString { "HPA" }
}

/// Host-virtual address: where the hypervisor itself reaches a host-physical frame.
@frozen public struct HostVirtAddr: MemoryAddress {
    /// The address as a plain number.
    public let raw: UInt64
    /// The host-virtual address with this numeric value.
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    /// `HVA`.
    public static var prefix: StaticString { "HVA" }

    /// The address as a raw pointer. Only meaningful in the hypervisor's own address space.
    @inlinable public var pointer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(raw)) }
}

/// A half-open range `[start, end)` of one address kind.
@frozen public struct AddrRange<A: MemoryAddress>: Hashable, Sendable, CustomStringConvertible {
    /// The first address in the range.
    public let start: A
    /// The first address after the range.
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
    /// The length in bytes.
    @inlinable public var size: UInt64 { end - start }
    /// Whether the range holds no address.
    @inlinable public var isEmpty: Bool { start == end }
    /// One unsigned compare: below `start`, the difference wraps to a huge value.
    @inlinable public func contains(_ a: A) -> Bool { a.raw &- start.raw < end.raw &- start.raw }
    /// Whether every address of `r` is in this range.
    @inlinable public func contains(_ r: AddrRange<A>) -> Bool { start <= r.start && r.end <= end }
    /// Whether the two ranges share at least one address.
    @inlinable public func overlaps(_ r: AddrRange<A>) -> Bool { start < r.end && r.start < end }
    /// The range in hexadecimal, e.g. `GPA:[0x0, 0x1000)`.
    public var description: String { "\(A.prefix):[\(hex(start.raw)), \(hex(end.raw)))" }
}

/// A range of guest-physical addresses (an area, a fault window).
public typealias GuestPhysRange = AddrRange<GuestPhysAddr>
/// A range of host-physical addresses.
public typealias HostPhysRange = AddrRange<HostPhysAddr>

/// The page sizes a 4 KiB-granule nested table can map with one leaf.
public enum PageSize: UInt64, Sendable, CaseIterable, CustomStringConvertible {
    /// 4 KiB: a page (the last level of every format).
    case size4K = 0x1000
    /// 2 MiB: a block one level above a page.
    case size2M = 0x20_0000
    /// 1 GiB: a block two levels above a page.
    case size1G = 0x4000_0000

    /// The size in bytes.
    @inlinable public var bytes: UInt64 { rawValue }
    /// log2 of the size.
    @inlinable public var shift: UInt64 {
        switch self {
        case .size4K: 12
        case .size2M: 21
        case .size1G: 30
        }
    }
    /// `4K`, `2M` or `1G`.
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
