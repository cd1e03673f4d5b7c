import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM
import Synchronization

/// When to take a snapshot of a running VM, and where to put it.
public struct SnapshotPlan: Sendable, Equatable {
    /// The snapshot directory (made if absent; an earlier snapshot there is replaced).
    public var directory: String
    /// The first time the guest's console prints this text.
    public var onText: String?
    /// This many seconds after the guest started.
    public var afterSeconds: Double?
    /// On SIGUSR1 (the CLI always listens when a snapshot directory is given).
    public var onSignal = false
    /// End the run once the snapshot is written (else the guest goes on).
    public var andExit = false
    /// For a restored VM: write only what changed since the restore, over the restored
    /// snapshot (KVM's dirty log; `axvm restore --snapshot-diff`).
    public var diff = false
    public init(directory: String) { self.directory = directory }

    /// The plan the command line's snapshot options give (both front ends): nil without a
    /// directory, refused if a trigger or flag comes without one. SIGUSR1 is always a trigger.
    public static func commandLine(directory: String?, onText: String?, afterSeconds: Double?, andExit: Bool,
                                   diff: Bool) throws(VMMError) -> SnapshotPlan? {
        guard let directory else {
            if onText != nil || afterSeconds != nil || andExit || diff {
                throw .badValue(what: "snapshot options", value: "without --snapshot",
                                reason: "--snapshot-on, --snapshot-after, --snapshot-and-exit and --snapshot-diff need --snapshot DIR")
            }
            return nil
        }
        var p = SnapshotPlan(directory: directory)
        p.onText = onText
        p.afterSeconds = afterSeconds
        p.onSignal = true
        p.andExit = andExit
        p.diff = diff
        try p.validate()
        return p
    }

    /// Refuses an unusable plan, naming the value.
    public func validate() throws(VMMError) {
        if directory.isEmpty { throw .badValue(what: "snapshot directory", value: "\"\"", reason: "must name a directory") }
        if let t = onText, t.isEmpty { throw .badValue(what: "snapshot text", value: "\"\"", reason: "must not be empty") }
        if let s = afterSeconds, !(s > 0 && s <= VMConfig.maxTimeout) {
            throw .badValue(what: "snapshot delay", value: "\(s)", reason: "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout))")
        }
    }
}

/// What taking the snapshot cost, for the report.
public struct SnapshotResult: Sendable, Equatable {
    public var directory: String
    /// What set it off: "console text", "timer", "SIGUSR1".
    public var trigger: String
    /// Guest pages written (the populated ones) and the memory file's blocks on disk.
    public var pages: Int
    public var memoryFileBytes: UInt64
    public var diskBytes: UInt64
    public var stateBytes: Int
    /// From the request to every vCPU paused, and the pause in all (request → vCPUs resumed).
    public var pauseNanos: UInt64
    public var totalNanos: UInt64
    /// When it was asked for, from the start of the vCPUs.
    public var atNanos: UInt64
    /// vCPUs whose loop had already ended (a memtest vCPU that exited): saved as ended.
    public var vcpusEnded: Int
}

/// Takes one snapshot of a running VM: a trigger (`request`) kicks every vCPU out of
/// KVM_RUN; each vCPU, at the top of its loop, completes its last exit (a KVM_RUN with
/// `immediate_exit`, so a port read gets its data and the instruction retires, as the KVM
/// API asks before the state is read), saves its own registers and waits; the last vCPU
/// to arrive (or to end its loop) writes the VM's state, the devices and guest memory,
/// then lets them all go on, or end the run.
///
/// One snapshot per run: later triggers are ignored.
final class SnapshotTaker: @unchecked Sendable {  // mutable state under `mutex`
    let plan: SnapshotPlan
    private let requested = Atomic<Bool>(false)
    // Allocated: a pthread object must not move.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private enum Phase { case idle, saving, done }
    private var phase = Phase.idle
    private var trigger = ""
    private var requestedAt: UInt64 = 0
    private var active: Int
    private var arrived = 0
    private var states: [[UInt8]]
    private var ended: [VCPUOutcome?]
    private var firstError: VMMError?
    private(set) var result: SnapshotResult?
    /// Set before the run starts; called by the leader with every vCPU's state and end.
    var save: (_ states: [[UInt8]], _ ended: [VCPUOutcome?]) throws(VMMError) -> (pages: Int, memoryBytes: UInt64, diskBytes: UInt64, stateBytes: Int) = { _, _ in (0, 0, 0, 0) }
    var kick: @Sendable () -> Void = {}
    private var timer: OSThread?
    private let stopEvent: EventFD
    /// Made just before the vCPUs start: the zero of `SnapshotResult.atNanos`.
    private let created = nowNanos()

    init(plan: SnapshotPlan, vcpus: Int) throws(VMMError) {
        self.plan = plan
        active = vcpus
        states = Array(repeating: [], count: vcpus)
        ended = Array(repeating: nil, count: vcpus)
        stopEvent = try EventFD()
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }
    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Whether a snapshot was asked for and not taken yet.
    var isPending: Bool { requested.load(ordering: .acquiring) && withLock { phase != .done } }
    var error: VMMError? { withLock { firstError } }
    var taken: SnapshotResult? { withLock { result } }

    private func withLock<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Asks for the snapshot (any thread); the first request wins.
    func request(_ why: String) {
        guard requested.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        withLock {
            trigger = why
            requestedAt = nowNanos()
        }
        kick()
    }

    /// Starts the timer and signal triggers (SIGUSR1 must be blocked in every thread: the
    /// CLI blocks it from the start, `Termination.install`).
    func start() throws(VMMError) {
        guard plan.afterSeconds != nil || plan.onSignal else { return }
        var signalFD: Int32 = -1
        if plan.onSignal {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            pthread_sigmask(SIG_BLOCK, &set, nil)
            signalFD = signalfd(-1, &set, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
            guard signalFD >= 0 else { throw .host("signalfd(SIGUSR1): \(errnoString(errno))") }
        }
        let deadline = plan.afterSeconds.map { nowNanos() + UInt64($0 * 1e9) }
        let stopFD = stopEvent.fd, sfd = signalFD
        timer = try OSThread(.helper, name: "axvm-snaptimer") { [self] in
            defer { if sfd >= 0 { close(sfd) } }
            var fds = [pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0), pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            while true {
                var wait: Int32 = -1
                if let deadline {
                    let now = nowNanos()
                    if now >= deadline { request("timer"); return }
                    wait = Int32(min((deadline - now) / 1_000_000 + 1, 1_000_000))
                }
                let r = poll(&fds, sfd >= 0 ? 2 : 1, wait)
                if r < 0 && errno == EINTR { continue }
                if fds[0].revents != 0 { return }
                if sfd >= 0 && fds[1].revents != 0 {
                    var info = signalfd_siginfo()
                    _ = read(sfd, &info, MemoryLayout<signalfd_siginfo>.size)
                    request("SIGUSR1")
                    return
                }
            }
        }
    }

    func stop() {
        stopEvent.signal()
        timer?.join()
        timer = nil
    }

    /// vCPU `index` at a pause point with its state (or the error reading it). Returns when
    /// the snapshot is written: true if the run ends here (`andExit`, or the save failed).
    func pause(index: Int, state: Result<[UInt8], VMMError>) -> Bool {
        pthread_mutex_lock(mutex)
        switch state {
        case let .success(s): states[index] = s
        case let .failure(e): firstError = firstError ?? e
        }
        arrived += 1
        if phase == .idle && arrived == active {
            lead()
        } else {
            while phase != .done { pthread_cond_wait(cond, mutex) }
        }
        let stop = plan.andExit || firstError != nil
        pthread_mutex_unlock(mutex)
        return stop
    }

    /// vCPU `index`'s loop ended (with `outcome`): it no longer takes part; if the others
    /// are all waiting, the snapshot is taken now.
    func leave(index: Int, outcome: VCPUOutcome) {
        pthread_mutex_lock(mutex)
        active -= 1
        ended[index] = outcome
        if requested.load(ordering: .acquiring) && phase == .idle && arrived == active && active > 0 { lead() }
        pthread_mutex_unlock(mutex)
    }

    /// Writes the snapshot; called with `mutex` held, which it drops while writing.
    private func lead() {
        phase = .saving
        let paused = nowNanos()
        let s = states, e = ended, failed = firstError != nil
        pthread_mutex_unlock(mutex)
        var outcome: Result<(pages: Int, memoryBytes: UInt64, diskBytes: UInt64, stateBytes: Int), VMMError> = .failure(.host("not saved"))
        if !failed { outcome = Result { () throws(VMMError) in try save(s, e) } }
        let end = nowNanos()
        pthread_mutex_lock(mutex)
        switch outcome {
        case let .success(w):
            result = SnapshotResult(directory: plan.directory, trigger: trigger, pages: w.pages, memoryFileBytes: w.memoryBytes,
                                    diskBytes: w.diskBytes, stateBytes: w.stateBytes,
                                    pauseNanos: paused &- requestedAt, totalNanos: end &- requestedAt,
                                    atNanos: requestedAt &- created, vcpusEnded: e.filter { $0 != nil }.count)
        case let .failure(err): if !failed { firstError = err }
        }
        phase = .done
        pthread_cond_broadcast(cond)
    }
}
