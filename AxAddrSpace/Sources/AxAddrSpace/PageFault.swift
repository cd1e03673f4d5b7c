/// What kind of access faulted.
public enum AccessKind: Sendable, Equatable, CustomStringConvertible {
    /// A load, a store, or an instruction fetch.
    case read, write, execute

    /// The mapping permission the access needs.
    @inlinable public var requiredFlags: MappingFlags {
        switch self {
        case .read: .read
        case .write: .write
        case .execute: .execute
        }
    }
    /// `read`, `write` or `execute`.
    public var description: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .execute: "execute"
        }
    }
}

/// Why the walk failed, as the hardware reports it.
public enum NestedFaultKind: Sendable, Equatable, CustomStringConvertible {
    /// No valid translation (a lazy page, or a hole).
    case translation
    /// A translation exists but forbids the access.
    case permission
    /// Arm access-flag fault (AF = 0).
    case accessFlag
    /// The architecture does not tell a missing page from a permission fault (RISC-V
    /// guest-page faults). `handlePageFault` decides from its own tables, as for the kinds
    /// above.
    case unknown
    /// Not a missing page or a permission problem, and populating memory cannot fix it: an
    /// Arm synchronous external abort, alignment, address-size or TLB-conflict fault; an AMD
    /// #NPF with the reserved-bit flag. `handlePageFault` refuses it (`.unrecoverable`)
    /// without touching the space.
    case unrecoverable

    /// `translation`, `permission`, `access-flag`, `unknown` or `unrecoverable`.
    public var description: String {
        switch self {
        case .translation: "translation"
        case .permission: "permission"
        case .accessFlag: "access-flag"
        case .unknown: "unknown"
        case .unrecoverable: "unrecoverable"
        }
    }
}

/// A nested (second-stage) page fault in architecture-neutral form; every decoder
/// (`EPTViolation`, `NPTFault`, `Stage2Abort`, `GStageFault`) produces one.
/// The Rust crate's `NestedPageFaultInfo`, plus the fault kind.
public struct NestedPageFault: Sendable, Equatable, CustomStringConvertible {
    /// The guest-physical address that faulted.
    public var gpa: GuestPhysAddr
    /// What the guest was doing.
    public var access: AccessKind
    /// What the hardware says is missing (`.unknown` where it cannot tell).
    public var kind: NestedFaultKind
    /// A fault record from its parts (the decoders make them from hardware state).
    public init(gpa: GuestPhysAddr, access: AccessKind, kind: NestedFaultKind = .unknown) {
        self.gpa = gpa
        self.access = access
        self.kind = kind
    }
    /// E.g. `translation fault, write at GPA:0x1000`.
    public var description: String { "\(kind) fault, \(access) at \(gpa)" }
}

/// What `AddrSpace.handlePageFault` did. The Rust crate answers a bare `bool`; a hypervisor
/// needs to know whether to resume the guest, inject a fault, or stop it.
public enum FaultResolution: Sendable, Equatable, CustomStringConvertible {
    /// Lazy memory was populated: `pages` zeroed 4 KiB frames mapped over `range`.
    /// Resume the guest.
    case mapped(GuestPhysRange, pages: Int)
    /// The page is already mapped and allows the access (a spurious or racing fault, e.g.
    /// another vCPU populated it). Resume the guest; nothing was allocated.
    case alreadyMapped
    /// No area covers the address: an MMIO hole or a guest bug.
    case notInArea
    /// The area forbids the access (a write to read-only memory, a fetch from non-executable
    /// memory). Populating would not help.
    case accessDenied(allowed: MappingFlags)
    /// The HAL had no frame. The space is unchanged.
    case outOfMemory
    /// The fault record says the cause is not memory (`NestedFaultKind.unrecoverable`: an
    /// external abort, an alignment fault, a reserved bit). Nothing was touched: stop the
    /// guest or inject the abort.
    case unrecoverable

    /// The guest may resume.
    public var isResolved: Bool {
        switch self {
        case .mapped, .alreadyMapped: true
        default: false
        }
    }
    /// What happened in words, e.g. `mapped 16 page(s) GPA:[0x10000, 0x20000)`.
    public var description: String {
        switch self {
        case let .mapped(r, n): "mapped \(n) page(s) \(r)"
        case .alreadyMapped: "already mapped"
        case .notInArea: "not in any area"
        case let .accessDenied(f): "access denied (area allows \(f))"
        case .outOfMemory: "out of memory"
        case .unrecoverable: "not a missing page (unrecoverable fault); nothing mapped"
        }
    }
}
