import AxAddrSpace
import CKVM
import Glibc

/// Which nested-fault record the host CPU would produce (the host's MMU decides the
/// format KVM uses: EPT on Intel, NPT on AMD).
public enum HostCPU: Sendable {
    case amd, intel

    /// From /proc/cpuinfo's vendor_id; AMD if unknown.
    public static func detect() -> HostCPU {
        guard let f = fopen("/proc/cpuinfo", "r") else { return .amd }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = String(cString: line)
            if s.hasPrefix("vendor_id") { return s.contains("GenuineIntel") ? .intel : .amd }
        }
        return .amd
    }

    /// The record a hardware nested fault at `gpa` would carry, decoded by the library's
    /// decoder for this CPU: #NPF EXITINFO1/2 on AMD, EPT-violation qualification on Intel.
    func nestedFault(gpa: UInt64, write: Bool) -> NestedPageFault {
        switch self {
        case .amd: NPTFault(exitInfo1: 1 << 32 | (write ? 0x2 : 0) | 0x4, exitInfo2: gpa).fault
        case .intel: EPTViolation(qualification: write ? 0x2 : 0x1, guestPhysicalAddress: gpa).fault
        }
    }
}

/// Counters and timings of the fault thread.
public struct PagerStatistics: Sendable, Equatable {
    /// Faults on pages absent from the memfd, resolved by `handlePageFault` mapping memory.
    public var faults = 0
    /// Minor faults: page populated (e.g. by the loader) but not yet mapped in the window.
    public var minorFaults = 0
    /// Pages mapped by the faults.
    public var pagesMapped = 0
    /// Host-side service time of each fault (read event → guest woken), nanoseconds.
    public var latencies: [UInt64] = []
    /// Guest-physical address of each fault that mapped memory, in order.
    public var faultAddresses: [UInt64] = []

    public func percentile(_ p: Double) -> UInt64 {
        guard !latencies.isEmpty else { return 0 }
        let sorted = latencies.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p + 0.5))]
    }
}

/// The fault thread: reads userfaultfd events of the lazy windows, turns each into the
/// host's nested-fault record, resolves it with `AddrSpace.handlePageFault` and maps the
/// populated pages into the window with UFFDIO_CONTINUE. Never runs on a vCPU thread.
///
/// If it fails (out of memory, a fault the library refuses), it records the failure,
/// unregisters every window (which wakes any thread blocked on a fault, so no vCPU hangs)
/// and calls `onFatal` so the run loop stops the guest.
final class LazyPager<Format: NestedPagingFormat>: @unchecked Sendable {  // stats/failure read after join()
    let memory: GuestMemory<Format>
    let faultAround: UInt64
    let cpu: HostCPU
    private let stopEvent: EventFD
    private var thread: OSThread?
    private(set) var stats = PagerStatistics()
    private(set) var failure: String?
    var onFatal: @Sendable () -> Void = {}

    init(memory: GuestMemory<Format>, faultAround: UInt64, cpu: HostCPU) throws(VMMError) {
        self.memory = memory
        self.faultAround = faultAround
        self.cpu = cpu
        stopEvent = try EventFD()
    }

    func start() throws(VMMError) {
        thread = try OSThread { [self] in self.loop() }
    }

    /// Stops and joins the thread; afterwards `stats` and `failure` are final.
    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
    }

    private func loop() {
        let uffd = memory.userfault.fd.raw
        let msgSize = ckvm_uffd_msg_size()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: msgSize * 64, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: uffd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0)]
        while failure == nil {
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                fail("poll(userfaultfd): \(errnoString(errno))")
                break
            }
            if fds[1].revents != 0 { break }
            let n = read(uffd, buffer, msgSize * 64)
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                fail("read(userfaultfd): \(errnoString(errno))")
                break
            }
            for i in 0..<(n / msgSize) {
                let msg = ckvm_uffd_decode(buffer + i * msgSize)
                guard msg.event == UFFD_EVENT_PAGEFAULT else { continue }
                handle(address: msg.address, flags: msg.flags)
                if failure != nil { break }
            }
        }
    }

    private func handle(address: UInt64, flags: UInt64) {
        let t0 = nowNanos()
        guard let region = memory.region(containingHostAddress: address) else {
            fail("fault at host address 0x\(String(address, radix: 16)) outside every guest window")
            return
        }
        let offset = (address & ~0xfff) - region.window
        let gpa = region.range.start + offset
        let write = flags & UInt64(UFFD_PAGEFAULT_FLAG_WRITE) != 0
        let fault = cpu.nestedFault(gpa: gpa.raw, write: write)
        let resolution = memory.withSpace { $0.handlePageFault(fault, faultAround: faultAround) }
        let window: GuestPhysRange
        switch resolution {
        case let .mapped(range, pages):
            stats.faults += 1
            stats.pagesMapped += pages
            stats.faultAddresses.append(gpa.raw)
            window = range
        case .alreadyMapped:
            stats.minorFaults += 1
            window = GuestPhysRange(start: gpa, end: gpa + 4096)
        default:
            fail("guest \(fault.access) at \(gpa): \(resolution)")
            return
        }
        do {
            try memory.userfault.resolve(region.window + (window.start - region.range.start), window.size,
                                         faultAddress: address)
        } catch {
            fail("\(error)")
            return
        }
        stats.latencies.append(nowNanos() - t0)
    }

    private func fail(_ message: String) {
        failure = message
        // Release every waiter: with the windows unregistered, blocked faults retry and
        // complete in the kernel, so the vCPU thread returns to the run loop.
        for r in memory.regions where r.lazy { memory.userfault.unregister(r.window, r.range.size) }
        onFatal()
    }
}
