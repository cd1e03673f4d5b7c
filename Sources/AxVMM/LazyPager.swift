import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM
import Synchronization

/// Counters and timings of the fault threads (summed), or of one. Constant size however
/// long the guest runs.
public struct PagerStatistics: Sendable, Equatable {
    /// Faults on pages absent from the memfd, resolved by `handlePageFault` mapping memory.
    public var faults = 0
    /// Faults at guest-physical addresses at or above `countAbove` (the memtest region;
    /// below it: boot data, code and stack).
    public var faultsAbove = 0
    /// Events for pages already populated: by the loader, or by another fault thread for
    /// another vCPU touching the same page (answered with CONTINUE, EEXIST, wake).
    public var minorFaults = 0
    /// Pages mapped by the faults.
    public var pagesMapped = 0
    /// Pages given back to the host (virtio-balloon) that a fault mapped again.
    public var refaultedPages = 0
    /// Host-side service time of each event (read → guest woken), nanoseconds.
    public var latency = LatencyHistogram()
    /// Where that time went, summed over all events: inside `handlePageFault` (with the
    /// wait for the address-space lock), and resolving the host side (materializing the
    /// window's pages in the memfd, UFFDIO_CONTINUE, which also wakes the vCPU).
    public var libraryNanos: UInt64 = 0
    public var resolveNanos: UInt64 = 0
    /// For `--fault-map`: when each cell was first populated, faults per time slice.
    public var timeline: FaultTimeline?

    public func percentile(_ p: Double) -> UInt64 { latency.percentile(p) }
    /// Time spent serving events.
    public var busyNanos: UInt64 { libraryNanos &+ resolveNanos }

    mutating func merge(_ o: PagerStatistics) {
        faults += o.faults
        faultsAbove += o.faultsAbove
        minorFaults += o.minorFaults
        pagesMapped += o.pagesMapped
        refaultedPages += o.refaultedPages
        latency.merge(o.latency)
        libraryNanos &+= o.libraryNanos
        resolveNanos &+= o.resolveNanos
        if let t = o.timeline {
            if timeline == nil { timeline = t } else { timeline?.merge(t) }
        }
    }
}

/// The fault threads: each reads events of the guest's RAM windows from the one
/// userfaultfd (a message goes to exactly one reader), turns it into the host's nested-fault
/// record, resolves it with `AddrSpace.handlePageFault` and maps the populated pages into
/// the window with UFFDIO_CONTINUE. Never a vCPU thread.
///
/// Several threads may serve events for the same page (two vCPUs touched it): the library
/// maps it once, under `GuestMemory`'s lock; the other thread gets `.alreadyMapped`, and its
/// CONTINUE finds the page mapped (EEXIST) and only wakes its vCPU. Resolution runs under
/// `GuestMemory.resolution` (shared), so a reclaim never lands in the middle of one.
///
/// If a thread fails (out of memory, a fault the library refuses), it records the failure,
/// makes every window inaccessible (so that nothing — neither the guest nor KVM — can
/// populate a page behind the library's back), unregisters the windows (which wakes any
/// thread blocked on a fault: its retry fails with EFAULT, so no vCPU hangs) and calls
/// `onFatal` so the run loop stops the guest.
final class LazyPager<Format: NestedPagingFormat>: @unchecked Sendable {  // see the fields
    let memory: GuestMemory<Format>
    let faultAround: UInt64
    /// The platform's fault record for a guest access (`Platform.nestedFault`).
    let nestedFault: @Sendable (GuestPhysAddr, Bool) -> NestedPageFault
    /// Faults at or above this GPA are counted in `faultsAbove`.
    let countAbove: UInt64
    /// With `--fault-map`: the grid each thread's `FaultTimeline` records on, and its zero time.
    let mapLayout: FaultMapLayout?
    let mapStart: UInt64
    let threadCount: Int
    private let stopEvent: EventFD
    private var threads: [OSThread] = []
    /// One box per thread. `value` is written by its thread only and read after `stop()`
    /// joined them (the join orders the accesses); the atomics say what the thread is doing
    /// while it runs, for `releaseStuckVCPUs`' report. Boxes, not array elements: the array
    /// is never mutated.
    private final class Box: @unchecked Sendable {
        var value = PagerStatistics()
        /// Host address of the fault being resolved, `idle` when none.
        let address = Atomic<UInt64>(Box.idle)
        let since = Atomic<UInt64>(0)
        let served = Atomic<UInt64>(0)
        static var idle: UInt64 { .max }
    }
    private let perThread: [Box]
    /// Written by the fault threads, read by the run loop while it runs: behind a mutex.
    private let failureBox = Locked<String?>(nil)
    var failure: String? { failureBox.withLock { $0 } }
    /// Set before `start()`, read by the fault threads only.
    var onFatal: @Sendable () -> Void = {}

    init(memory: GuestMemory<Format>, faultAround: UInt64, countAbove: UInt64 = 0, threads: Int = 1,
         mapLayout: FaultMapLayout? = nil, mapStart: UInt64 = 0,
         nestedFault: @escaping @Sendable (GuestPhysAddr, Bool) -> NestedPageFault) throws(VMMError) {
        self.memory = memory
        self.mapLayout = mapLayout
        self.mapStart = mapStart
        self.faultAround = faultAround
        self.nestedFault = nestedFault
        self.countAbove = countAbove
        self.threadCount = max(1, threads)
        perThread = (0..<max(1, threads)).map { _ in Box() }
        stopEvent = try EventFD()
    }

    func start() throws(VMMError) {
        for i in 0..<threadCount {
            let t: OSThread
            do { t = try OSThread(.fault, name: "axvm-fault\(i)") { [self] in self.loop(i) } } catch {
                stop()
                throw error
            }
            threads.append(t)
        }
    }

    /// Stops and joins the threads; afterwards `stats` and `failure` are final.
    func stop() {
        stopEvent.signal()
        for t in threads { t.join() }
        threads.removeAll()
    }

    /// All threads' statistics together (after `stop()`).
    var stats: PagerStatistics {
        var s = PagerStatistics()
        for t in perThread { s.merge(t.value) }
        return s
    }
    /// Each thread's statistics (after `stop()`).
    var threadStats: [PagerStatistics] { perThread.map { $0.value } }

    private func loop(_ index: Int) {
        let uffd = memory.userfault.fd.raw
        let msgSize = ckvm_uffd_msg_size()
        // One message per read when several threads share the fd: a batch would let one
        // thread take two vCPUs' faults and serve them in turn while the other thread
        // finds nothing (docs/performance.md, SMP scaling).
        let batch = threadCount > 1 ? 1 : 64
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: msgSize * batch, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: uffd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0)]
        var stats = PagerStatistics()
        if let l = mapLayout { stats.timeline = FaultTimeline(cells: l.cellCount, start: mapStart) }
        defer { perThread[index].value = stats }
        var failed = false
        while !failed {
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                fail("poll(userfaultfd): \(errnoString(errno))")
                break
            }
            if fds[1].revents != 0 { break }
            // With several threads, another one may have taken the message: EAGAIN.
            let n = read(uffd, buffer, msgSize * batch)
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                fail("read(userfaultfd): \(errnoString(errno))")
                break
            }
            for i in 0..<(n / msgSize) {
                let msg = ckvm_uffd_decode(buffer + i * msgSize)
                guard msg.event == UFFD_EVENT_PAGEFAULT else { continue }
                let a = perThread[index]
                a.since.store(nowNanos(), ordering: .relaxed)
                a.address.store(msg.address, ordering: .releasing)
                Termination.pause(at: "fault")  // the test hook: a signal while a fault is served
                if !handle(address: msg.address, flags: msg.flags, &stats) { failed = true; break }
                a.address.store(Box.idle, ordering: .releasing)
                a.served.add(1, ordering: .relaxed)
            }
        }
    }

    /// Resolves one fault; false after a failure (recorded by `fail`).
    private func handle(address: UInt64, flags: UInt64, _ stats: inout PagerStatistics) -> Bool {
        let t0 = nowNanos()
        guard let region = memory.region(containingHostAddress: address) else {
            fail("fault at host address 0x\(String(address, radix: 16)) outside every guest window")
            return false
        }
        let offset = (address & ~0xfff) - region.window
        let gpa = region.range.start + offset
        let write = flags & UInt64(UFFD_PAGEFAULT_FLAG_WRITE) != 0
        let fault = nestedFault(gpa, write)
        var t1: UInt64 = 0
        let outcome: Result<Void, VMMError> = memory.resolution.shared {
            let resolution = memory.withSpace { $0.handlePageFault(fault, faultAround: faultAround) }
            t1 = nowNanos()
            let window: GuestPhysRange
            switch resolution {
            case let .mapped(range, pages):
                stats.faults += 1
                stats.refaultedPages += memory.takeReturned(range)
                if gpa.raw >= countAbove { stats.faultsAbove += 1 }
                stats.pagesMapped += pages
                if let l = mapLayout { stats.timeline?.record(range, at: t0, layout: l) }
                window = range
            case .alreadyMapped:
                stats.minorFaults += 1
                window = GuestPhysRange(start: gpa, end: gpa + 4096)
            default:
                // A restore's page that could not be copied in says why itself.
                if let why = memory.withSpace({ _ in memory.hal.contents?.failure }) { return .failure(.host(why)) }
                return .failure(.host("guest \(fault.access) at \(gpa): \(resolution)"))
            }
            return Result { () throws(VMMError) in
                // Materialize even for .alreadyMapped: the thread that mapped the page may
                // not have reached its fallocate yet, and CONTINUE needs the page.
                let span = region.spanOffset + (window.start - region.range.start)
                try memory.host.materialize(span, window.size)
                try memory.userfault.resolve(region.window + (window.start - region.range.start), window.size,
                                             faultAddress: address)
            }
        }
        if case let .failure(e) = outcome {
            fail("\(e)")
            return false
        }
        let t2 = nowNanos()
        stats.libraryNanos &+= t1 &- t0
        stats.resolveNanos &+= t2 &- t1
        stats.latency.record(t2 &- t0)
        return true
    }

    /// The run did not end after its vCPUs were told to stop (`Watchdog`): a vCPU is
    /// blocked in the host kernel, most likely on a guest page no fault thread is
    /// resolving. Records that as the run's failure with what the fault threads are doing
    /// (host address of the page each one is on and for how long, events waiting in the
    /// userfaultfd) and fences guest memory, which wakes every waiter with EFAULT.
    func releaseStuckVCPUs() {
        let now = nowNanos()
        var pending = pollfd(fd: memory.userfault.fd.raw, events: Int16(POLLIN), revents: 0)
        let waiting = poll(&pending, 1, 0) > 0
        let threads = perThread.enumerated().map { i, a in
            let at = a.address.load(ordering: .acquiring), served = a.served.load(ordering: .relaxed)
            let state = at == Box.idle ? "idle"
                : "on host address 0x\(String(at, radix: 16)) for \(StatsFormat.fixed(Double(now &- a.since.load(ordering: .relaxed)) / 1e9, 1)) s"
            return "fault thread \(i) \(state) after \(served) faults"
        }
        fail("a vCPU did not leave KVM_RUN within \(Watchdog.graceMillis / 1000) s of the stop request (blocked in the host kernel); "
            + threads.joined(separator: ", ") + "; userfaultfd events \(waiting ? "waiting unread" : "none waiting")"
            + "; guest memory fenced to release it")
    }

    private func fail(_ message: String) {
        failureBox.withLock { $0 = $0 ?? message }
        memory.fence()
        onFatal()
    }
}
