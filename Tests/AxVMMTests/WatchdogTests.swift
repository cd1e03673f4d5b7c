@testable import AxVMM
import Glibc
import Synchronization
import Testing

/// The watchdog's two stages with real threads and real time: the kick at the deadline, then
/// `stuck` if the run does not end within the grace period (a vCPU the kick cannot reach).
@Suite struct WatchdogTests {
    final class Counts: Sendable {
        let kicks = Atomic<Int>(0)
        let stuck = Atomic<Int>(0)
    }

    func waitFor(_ condition: () -> Bool, seconds: Double = 10) -> Bool {
        let end = monotonicSeconds() + seconds
        while !condition() {
            if monotonicSeconds() > end { return false }
            usleep(1000)
        }
        return true
    }

    @Test func aRunThatEndsAfterTheKickIsNotStuck() throws {
        let c = Counts()
        let w = try Watchdog(timeout: 0.05, handleInterrupt: false, kick: { c.kicks.add(1, ordering: .relaxed) },
                             graceMillis: 300, stuck: { c.stuck.add(1, ordering: .relaxed) })
        #expect(waitFor { c.kicks.load(ordering: .relaxed) == 1 })
        #expect(w.timedOut)
        w.stop()  // the run ended well inside the grace period
        usleep(400_000)
        #expect(c.stuck.load(ordering: .relaxed) == 0)
    }

    @Test func aRunThatDoesNotEndIsReportedStuckOnce() throws {
        let c = Counts()
        let t0 = monotonicSeconds()
        let w = try Watchdog(timeout: 0.05, handleInterrupt: false, kick: { c.kicks.add(1, ordering: .relaxed) },
                             graceMillis: 200, stuck: { c.stuck.add(1, ordering: .relaxed) })
        #expect(waitFor { c.stuck.load(ordering: .relaxed) == 1 })
        let elapsed = monotonicSeconds() - t0
        #expect(elapsed >= 0.25, "stuck only after the deadline and the grace period (\(elapsed) s)")
        w.stop()
        #expect(c.kicks.load(ordering: .relaxed) == 1 && c.stuck.load(ordering: .relaxed) == 1)
    }
}
