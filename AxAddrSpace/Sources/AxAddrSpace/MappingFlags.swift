/// Architecture-neutral permissions and memory kind of a mapping.
///
/// Same bits and meaning as the Rust crate's `MappingFlags`. Each nested format converts
/// them to and from its own entry bits (see `NestedPagingFormat`).
@frozen public struct MappingFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let read = MappingFlags(rawValue: 1 << 0)
    public static let write = MappingFlags(rawValue: 1 << 1)
    public static let execute = MappingFlags(rawValue: 1 << 2)
    /// Accessible from the guest's user mode (EPT: execute-for-user with mode-based execute).
    public static let user = MappingFlags(rawValue: 1 << 3)
    /// Device memory (MMIO): uncacheable, strongly ordered.
    public static let device = MappingFlags(rawValue: 1 << 4)
    /// Normal memory, but not cached (write-combining on x86, Normal-NC on Arm).
    public static let uncached = MappingFlags(rawValue: 1 << 5)

    /// The access bits (read, write, execute).
    public static let access: MappingFlags = [.read, .write, .execute]
    public static let rw: MappingFlags = [.read, .write]
    public static let rwx: MappingFlags = [.read, .write, .execute]

    public var description: String {
        var s = ""
        s += contains(.read) ? "r" : "-"
        s += contains(.write) ? "w" : "-"
        s += contains(.execute) ? "x" : "-"
        if contains(.user) { s += "u" }
        if contains(.device) { s += "D" }
        if contains(.uncached) { s += "U" }
        return s
    }
}
