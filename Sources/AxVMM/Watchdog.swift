#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import Synchronization

/// Ends a run after `timeout` seconds or on Ctrl-C, by kicking the vCPU.
final class Watchdog: Sendable {
    private let stopEvent: EventFD
    /// Written once, by `init` and `stop` on the owning thread.
    private nonisolated(unsafe) var thread: OSThread?
    /// Set by the watchdog thread, read by the run loop: atomics.
    private let timedOutFlag = Atomic<Bool>(false)
    private let interruptedFlag = Atomic<Bool>(false)
    var timedOut: Bool { timedOutFlag.load(ordering: .acquiring) }
    /// The terminating signal that ended the run (`Termination`), if one did.
    var interruptSignal: Int32? { interruptedFlag.load(ordering: .acquiring) ? Termination.signal : nil }

    /// How long the run may take to end after the kick before `stuck` is called.
    static let graceMillis: Int32 = 5000

    /// `kick` stops the vCPUs at the deadline or on a terminating signal (with
    /// `handleInterrupt`: `Termination`). If the run has not ended
    /// (`stop()`) `graceMillis` after that, `stuck` is called once, on this thread: a vCPU
    /// that a kick cannot reach is blocked in the host kernel — in 6.1, KVM waits for a
    /// guest page killably, so a fault the pager never answered holds KVM_RUN against any
    /// signal — and `stuck` releases it (the pager fences guest memory) and says why.
    init(timeout: Double?, handleInterrupt: Bool, kick: @escaping @Sendable () -> Void,
         graceMillis: Int32 = Watchdog.graceMillis, stuck: @escaping @Sendable () -> Void = {}) throws(VMMError) {
        stopEvent = try EventFD()
        if handleInterrupt { try Termination.install() }
        // `timeout` is validated (finite, at most a week), so the product fits.
        let deadline = timeout.map { nowNanos() + UInt64($0 * 1e9) }
        let sfd = handleInterrupt ? Termination.eventFD : -1
        thread = try OSThread(.helper, name: "axvm-watchdog") { [self] in
            var fds = [pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            while true {
                var wait: Int32 = -1
                if let deadline {
                    let now = nowNanos()
                    if now >= deadline {
                        timedOutFlag.store(true, ordering: .releasing)
                        kick()
                        Self.awaitStop(&fds[0], graceMillis: graceMillis, stuck: stuck)
                        return
                    }
                    wait = Int32(min((deadline - now) / 1_000_000 + 1, 1_000_000))
                }
                let r = poll(&fds, sfd >= 0 ? 2 : 1, wait)
                if r < 0 && errno == EINTR { continue }
                if fds[0].revents != 0 { return }
                if sfd >= 0 && fds[1].revents != 0 {
                    interruptedFlag.store(true, ordering: .releasing)
                    kick()
                    Self.awaitStop(&fds[0], graceMillis: graceMillis, stuck: stuck)
                    return
                }
            }
        }
    }

    /// After the kick: waits up to `graceMillis` for `stop()`, else calls `stuck`.
    private static func awaitStop(_ stopFD: inout pollfd, graceMillis: Int32, stuck: @Sendable () -> Void) {
        let end = nowNanos() + UInt64(graceMillis) * 1_000_000
        while true {
            let now = nowNanos()
            if now >= end { stuck(); return }
            let r = poll(&stopFD, 1, Int32((end - now) / 1_000_000 + 1))
            if r > 0 { return }
            if r < 0 && errno != EINTR { stuck(); return }
        }
    }

    /// Stops the thread. The signals stay blocked (`Termination`): one that arrives while
    /// the CLI prints the results is recorded, not fatal.
    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
    }
}
