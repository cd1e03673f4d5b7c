/// Architecture-neutral permissions and memory kind of a mapping.
///
/// Same bits and meaning as the Rust crate's `MappingFlags`. Each nested format converts
/// them to and from its own entry bits (see `NestedPagingFormat`).
@frozen public struct MappingFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The flag bits, as in the Rust crate.
    public let rawValue: UInt64
    /// Flags from their bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The guest may read.
    public static let read = MappingFlags(rawValue: 1 << 0)
    /// The guest may write.
    public static let write = MappingFlags(rawValue: 1 << 1)
    /// The guest may fetch instructions.
    public static let execute = MappingFlags(rawValue: 1 << 2)
    /// Accessible from the guest's user mode (EPT: execute-for-user with mode-based execute).
    public static let user = MappingFlags(rawValue: 1 << 3)
    /// Device memory (MMIO): uncacheable, strongly ordered.
    public static let device = MappingFlags(rawValue: 1 << 4)
    /// Normal memory, but not cached (write-combining on x86, Normal-NC on Arm).
    public static let uncached = MappingFlags(rawValue: 1 << 5)

    /// The access bits (read, write, execute).
    public static let access: MappingFlags = [.read, .write, .execute]
    /// Read and write: data memory.
    public static let rw: MappingFlags = [.read, .write]
    /// Read, write and execute: ordinary guest RAM.
    public static let rwx: MappingFlags = [.read, .write, .execute]

    /// `rwx` style, with `u` (user), `D` (device) and `U` (uncached) when set.
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
