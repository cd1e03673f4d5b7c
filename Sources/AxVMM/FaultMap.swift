import AxAddrSpace

/// The guest's RAM areas laid end to end and cut into at most `maxCells` cells of
/// 2^`cellShift` bytes (one page for a small guest, 16 MiB each for a 64 GiB one): the
/// grid of `--fault-map`.
public struct FaultMapLayout: Sendable, Equatable {
    public struct Area: Sendable, Equatable {
        public var range: GuestPhysRange
        public var lazy: Bool
        /// The area's first cell and how many it has (its last one may be partly outside).
        public var firstCell: Int
        public var cells: Int
    }
    public static let maxCells = 4096
    public let areas: [Area]
    public let cellShift: Int
    public var cellBytes: UInt64 { 1 << UInt64(cellShift) }
    public var cellCount: Int { areas.last.map { $0.firstCell + $0.cells } ?? 0 }

    public init(areas ranges: [(range: GuestPhysRange, lazy: Bool)]) {
        // The smallest power-of-two cell (4 KiB at least) that keeps the count in bounds,
        // each area starting on a cell of its own.
        func cells(_ size: UInt64, _ shift: Int) -> Int { Int((size + (1 << UInt64(shift)) - 1) >> UInt64(shift)) }
        var shift = 12
        while shift < 40 && ranges.reduce(0, { $0 + cells($1.range.size, shift) }) > Self.maxCells { shift += 1 }
        cellShift = shift
        var next = 0
        areas = ranges.map { r in
            let n = cells(r.range.size, shift)
            defer { next += n }
            return Area(range: r.range, lazy: r.lazy, firstCell: next, cells: n)
        }
    }

    /// The cell holding `gpa`, nil outside every area (a linear search: a guest has a
    /// handful of areas).
    public func cell(of gpa: GuestPhysAddr) -> Int? {
        for a in areas where a.range.contains(gpa) {
            return a.firstCell + Int((gpa - a.range.start) >> UInt64(cellShift))
        }
        return nil
    }
}

/// What one fault thread records for the fault map: per cell, when a fault first populated
/// a page of it; per time slice, how many faults. Fixed size whatever the run's length:
/// when the run outgrows the slices, neighbours merge and each slice doubles. A thread
/// writes only its own record (no sharing on the fault path); records merge after the
/// threads are joined.
public struct FaultTimeline: Sendable, Equatable {
    public static let sliceCount = 120
    static let never = UInt64.max
    /// Nanoseconds from `start` to the first fault that populated a page of each cell.
    public private(set) var firstTouch: [UInt64]
    /// Faults per slice of 2^`sliceShift` ns, from `start`.
    public private(set) var slices: [UInt32]
    public private(set) var sliceShift: Int
    public let start: UInt64

    /// Slices start at 2^24 ns (16.8 ms): 2 s before the first merge.
    init(cells: Int, start: UInt64) {
        firstTouch = Array(repeating: Self.never, count: cells)
        slices = Array(repeating: 0, count: Self.sliceCount)
        sliceShift = 24
        self.start = start
    }

    public func firstTouchNanos(_ cell: Int) -> UInt64? {
        firstTouch[cell] == Self.never ? nil : firstTouch[cell]
    }
    public var sliceNanos: UInt64 { 1 << UInt64(sliceShift) }

    /// A fault at `now` populated `window`.
    mutating func record(_ window: GuestPhysRange, at now: UInt64, layout: FaultMapLayout) {
        let t = now > start ? now - start : 0
        if let first = layout.cell(of: window.start), let last = layout.cell(of: window.end - 1) {
            for c in first...last where t < firstTouch[c] { firstTouch[c] = t }
        }
        cover(t)
        slices[Int(t >> UInt64(sliceShift))] &+= 1
    }

    /// Coarsens until `t` ns after `start` falls inside the slices (e.g. the end of a run
    /// whose last fault came early).
    mutating func cover(_ t: UInt64) {
        while t >> UInt64(sliceShift) >= UInt64(Self.sliceCount) { coarsen() }
    }

    /// Halves the resolution: slice i gets old slices 2i and 2i+1.
    private mutating func coarsen() {
        for i in 0..<Self.sliceCount {
            slices[i] = 2 * i + 1 < Self.sliceCount ? slices[2 * i] &+ slices[2 * i + 1] : 0
        }
        sliceShift += 1
    }

    /// Adds another thread's record (same layout and start).
    mutating func merge(_ o: FaultTimeline) {
        var o = o
        while o.sliceShift < sliceShift { o.coarsen() }
        while sliceShift < o.sliceShift { coarsen() }
        for i in 0..<Self.sliceCount { slices[i] &+= o.slices[i] }
        for c in firstTouch.indices where o.firstTouch[c] < firstTouch[c] { firstTouch[c] = o.firstTouch[c] }
    }
}

/// Everything `--fault-map` draws, gathered when the run ends.
public struct FaultMapData: Sendable {
    public var layout: FaultMapLayout
    public var timeline: FaultTimeline
    /// Populated 4 KiB pages per cell at the end of the run (from the address space).
    public var populatedPages: [Int]
    /// From the timeline's start (the fault threads', just before the vCPUs') to the
    /// vCPUs' end, nanoseconds.
    public var runNanos: UInt64
}

extension FaultMapData {
    /// The fault threads' timelines merged, with each cell's populated pages counted from
    /// the address space.
    init<F>(layout: FaultMapLayout, memory: GuestMemory<F>, ram: [RAMRegion], threads: [PagerStatistics], runNanos: UInt64) {
        var pages = Array(repeating: 0, count: layout.cellCount)
        for (region, area) in zip(ram, layout.areas) {
            memory.forEachPopulatedPage(region) { page in
                pages[area.firstCell + (page << 12) >> layout.cellShift] += 1
            }
        }
        let recorded = threads.compactMap { $0.timeline }
        var timeline = recorded.first ?? FaultTimeline(cells: layout.cellCount, start: 0)
        for t in recorded.dropFirst() { timeline.merge(t) }
        timeline.cover(runNanos)
        self.init(layout: layout, timeline: timeline, populatedPages: pages, runNanos: runNanos)
    }
}
