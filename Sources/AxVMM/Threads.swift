import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A pthread mutex for state shared between the vCPU thread and the fault thread.
final class Lock: @unchecked Sendable {  // the mutex itself is the synchronization
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(m, nil) }
    deinit { pthread_mutex_destroy(m); m.deallocate() }
    func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
}

/// A value behind a `Lock`. Used instead of `Synchronization.Mutex`, whose Linux futex
/// implementation ThreadSanitizer cannot see (it reports the guarded accesses as races);
/// pthread mutexes it understands.
final class Locked<Value>: @unchecked Sendable {  // `value` only under `lock`
    private let lock = Lock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in try body(&value) }
    }
}

/// A pthread reader-writer lock: many fault threads resolve faults at once (shared), a
/// reclaim excludes them all (exclusive).
final class RWLock: @unchecked Sendable {  // the rwlock itself is the synchronization
    private let l = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    init() { pthread_rwlock_init(l, nil) }
    deinit { pthread_rwlock_destroy(l); l.deallocate() }
    func shared<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_rdlock(l)
        defer { pthread_rwlock_unlock(l) }
        return try body()
    }
    func exclusive<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(l)
        defer { pthread_rwlock_unlock(l) }
        return try body()
    }
}

/// A joinable OS thread running `body` (no Foundation).
final class OSThread: @unchecked Sendable {  // handle written once before use
    private var handle: UInt = 0  // the pthread_t (ckvm_thread_create)
    private final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }

    /// Starts `body` on a new thread that blocks every signal from its first instruction
    /// (the mask is inherited from the creating thread, which blocks all signals just
    /// around `pthread_create`). So a process-directed signal — Ctrl-C's SIGINT — can never
    /// land on a helper thread and kill the process behind the back of the thread that
    /// handles it (the watchdog's signalfd); only the vCPU thread takes SIGUSR2 kicks.
    ///
    /// The thread is named `name` (up to 15 bytes show in `ps -L`) and, with the sandbox on,
    /// confines itself to `role` before `body` runs (`Sandbox`). SIGSYS stays unblocked: a
    /// refused system call must reach the handler that reports it.
    init(_ role: SandboxRole, name: String, _ body: @escaping @Sendable () -> Void) throws(VMMError) {
        let box = Unmanaged.passRetained(Box {
            Sandbox.enterThread(role, name: name)
            body()
        }).toOpaque()
        var all = sigset_t(), saved = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGSYS)
        pthread_sigmask(SIG_SETMASK, &all, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        let r = ckvm_thread_create(&handle, { ctx in
            // Sound: ctx is the retained Box passed below, released exactly once here.
            let box = Unmanaged<Box>.fromOpaque(ctx!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if r != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw .host("pthread_create: \(errnoString(r))")
        }
    }
    func join() { ckvm_thread_join(handle) }
    /// For a thread that lives as long as the process: nobody joins it.
    func detach() { ckvm_thread_detach(handle) }
}

/// Monotonic nanoseconds.
@inline(__always) func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// An eventfd used to wake a thread blocked in poll(2).
final class EventFD: @unchecked Sendable {  // fd immutable
    let fd: Int32
    init() throws(VMMError) {
        fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0 else { throw .host("eventfd: \(errnoString(errno))") }
    }
    deinit { close(fd) }
    func signal() { var one: UInt64 = 1; _ = write(fd, &one, 8) }
}

/// A thread that calls `tick` every `periodMillis` until `stop()` (IRQResampler, the
/// halt probe of `LinuxLoader`).
final class PeriodicThread: Sendable {
    private let stopEvent: EventFD
    /// Written once by init and stop, on the owning thread.
    private nonisolated(unsafe) var thread: OSThread?

    init(name: String, periodMillis: Int32, tick: @escaping @Sendable () -> Void) throws(VMMError) {
        stopEvent = try EventFD()
        let stopFD = stopEvent.fd
        thread = try OSThread(.helper, name: name) {
            var fds = [pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
            while true {
                let r = poll(&fds, 1, periodMillis)
                if r > 0 { return }
                if r < 0 && errno != EINTR { return }
                if r == 0 { tick() }
            }
        }
    }

    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
    }
}

/// The index ranges of `values` in which each value is `step` above the one before (frames
/// adjacent in the memfd, consecutive page numbers): one system call per run, not per value.
func consecutiveRuns(_ values: [UInt64], step: UInt64) -> [Range<Int>] {
    var runs: [Range<Int>] = []
    var i = 0
    while i < values.count {
        var j = i + 1
        while j < values.count && values[j] == values[j - 1] &+ step { j += 1 }
        runs.append(i..<j)
        i = j
    }
    return runs
}
