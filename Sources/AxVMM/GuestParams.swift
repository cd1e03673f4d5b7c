import AxAddrSpace

/// Parameters the VMM gives a guest and results it reports, at the layout's `params`
/// (`X86Layout.params`, `AArch64Layout.params`): the same page on both architectures.
/// Offsets (u64 each): 0 magic, 8 memory size, 16 test base, 24 test size, 32 order
/// (0 sequential, 1 random, 2 strided), 40 stride in pages, 48 seed, 56 checksum (out),
/// 64 mismatches (out), 72 pages touched (out), 80 hole start, 88 hole size, 96 spacing,
/// 104 vCPUs, 112 mode (0 split: each vCPU its share of the test pages; 1 overlap: every
/// vCPU all of them, each in its own order). From 0x100, a 48-byte slot per vCPU
/// (`X86Layout.vcpuSlot`): its checksum, mismatches, pages (out), first page and index.
///
/// Test page `k` (0 ≤ k < test size / 4 KiB) is at `a = base + k · spacing · 4 KiB`, plus
/// the hole size if `a` ≥ the hole start (`testPageAddress`): the guests skip the 32-bit
/// hole exactly as the VMM lays RAM out, and with spacing > 1 (`--sparse`) the test pages
/// are spread over all of RAM.
public struct GuestParams: Sendable {
    public static let magic: UInt64 = 0x4d52_4150_4d56_5841  // "AXVMPARM"
    public enum Order: UInt64, Sendable, CaseIterable {
        case sequential = 0, random = 1, strided = 2
        /// The name the command line uses (no reflection in Embedded Swift: spelled out).
        public var name: String {
            switch self {
            case .sequential: "sequential"
            case .random: "random"
            case .strided: "strided"
            }
        }
    }
    /// How the vCPUs share the test pages.
    public enum Mode: UInt64, Sendable, CaseIterable {
        case split = 0, overlap = 1
        /// The name the command line uses.
        public var name: String { self == .split ? "split" : "overlap" }
    }
    public var memorySize: UInt64
    public var testBase: UInt64
    public var testSize: UInt64
    public var order: Order
    public var stridePages: UInt64
    public var seed: UInt64
    /// Guest RAM is absent from `holeStart` for `holeSize` bytes (size 0: no hole).
    public var holeStart: UInt64 = X86Layout.lowRAMLimit
    public var holeSize: UInt64 = 0
    /// Pages from one test page to the next (1: contiguous).
    public var spacing: UInt64 = 1
    public var vcpus: UInt64 = 1
    public var mode: Mode = .split

    /// The test pages vCPU `i` works on (`vcpu_share` in guests/lib.inc): indexes
    /// `first..<first+count`.
    public func share(of i: UInt64) -> (first: UInt64, count: UInt64) {
        if mode == .overlap { return (0, testPages) }
        // The guest's mul/div: a 128-bit product divided by the vCPU count.
        let a = UInt64((UInt128(testPages) * UInt128(i)) / UInt128(vcpus))
        let b = UInt64((UInt128(testPages) * UInt128(i + 1)) / UInt128(vcpus))
        return (a, b - a)
    }

    /// The vCPUs a memtest guest may have: the parameter page's result slots, on every
    /// architecture.
    public static let maxVCPUs = 64

    /// Where RAM starts (`GuestArch.ramBase`).
    public var ramBase: UInt64 = 0

    public init(memorySize: UInt64, testBase: UInt64, testSize: UInt64, order: Order, stridePages: UInt64,
                seed: UInt64, spacing: UInt64 = 1, arch: GuestArch = .x86_64) {
        self.memorySize = memorySize
        self.testBase = testBase
        self.testSize = testSize
        self.order = order
        self.stridePages = stridePages
        self.seed = seed
        self.spacing = spacing
        ramBase = arch.ramBase
        (holeStart, holeSize) = arch.ramHole(size: memorySize)
    }

    public var testPages: UInt64 { testSize / 4096 }

    /// The parameter page's first words, as the guests read them (results zero).
    public var words: [UInt64] {
        [Self.magic, memorySize, testBase, testSize, order.rawValue, stridePages, seed, 0, 0, 0,
         holeStart, holeSize, spacing, vcpus, mode.rawValue]
    }
    /// Where test page `k` lies (the formula the guests use).
    public func testPageAddress(_ k: UInt64) -> UInt64 {
        let a = testBase + k * spacing * 4096
        return holeSize > 0 && a >= holeStart ? a + holeSize : a
    }
    /// The highest guest-physical address of RAM, plus one.
    public var ramEnd: UInt64 { ramBase + memorySize + holeSize }
}

