import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM
import Synchronization

/// How one vCPU's loop ended.
enum VCPUOutcome: Sendable {
    /// The guest wrote its exit code (this vCPU is done; the others go on).
    case exited(UInt8)
    /// `hlt` with interrupts enabled: done, like an exit with code 0.
    case halted(rip: UInt64)
    /// `hlt` with interrupts disabled: nothing can wake it; the run ends (`ExitReason.deadHalt`).
    case deadHalt(rip: UInt64)
    /// Stopped because the run ended elsewhere (another vCPU, the pager, the watchdog).
    case stopped
}

/// Per-vCPU statistics.
public struct VCPUStatistics: Sendable, Equatable {
    public var exits = 0
    /// Time from the vCPU's first KVM_RUN to the end of its loop.
    public var runNanos: UInt64 = 0
}

/// What the vCPU threads of one run share: the first end that concerns the whole VM
/// (a fault, a timeout, Ctrl-C, a pager failure), and how to stop every vCPU.
///
/// Stopping a vCPU: set its `immediate_exit` (KVM_RUN returns at once if it is about to
/// enter) and send its thread SIGUSR2 (interrupts a running KVM_RUN with EINTR).
final class RunControl: Sendable {
    private let firstEnd = Locked<ExitReason?>(nil)
    private let firstError = Locked<VMMError?>(nil)
    private let stopping = Atomic<Bool>(false)
    /// The vCPUs and, once each thread has started, its pthread (0 before).
    private let targets: Locked<[(vcpu: VCPU, thread: pthread_t?)]>

    init(vcpus: [VCPU]) {
        targets = Locked(vcpus.map { ($0, nil) })
    }

    var isStopping: Bool { stopping.load(ordering: .acquiring) }
    var end: ExitReason? { firstEnd.withLock { $0 } }
    var error: VMMError? { firstError.withLock { $0 } }

    /// Called by vCPU `i`'s thread before its first run, so that kicks can reach it.
    func register(_ i: Int) {
        let me = pthread_self()
        targets.withLock { $0[i].thread = me }
    }

    /// Ends the run with `reason` (the first one wins) and stops every vCPU.
    func end(_ reason: ExitReason) {
        firstEnd.withLock { $0 = $0 ?? reason }
        stopAll()
    }

    /// Ends the run with a VMM error (reported by `Machine.run` as a thrown error).
    func fail(_ error: VMMError) {
        firstError.withLock { $0 = $0 ?? error }
        stopAll()
    }

    func stopAll() {
        stopping.store(true, ordering: .releasing)
        kickAll()
    }

    /// Interrupts every vCPU's KVM_RUN; each loop then looks at why.
    func kickAll() {
        targets.withLock { list in
            for t in list {
                t.vcpu.requestImmediateExit()
                if let thread = t.thread { pthread_kill(thread, SIGUSR2) }
            }
        }
    }
}

/// SIGUSR2 interrupts KVM_RUN (EINTR); the handler itself does nothing. (SIGUSR1 is the
/// user's: it asks for a snapshot, `SnapshotTaker`.)
func installKickHandler() {
    ckvm_install_noop_handler(SIGUSR2)  // no SA_RESTART: KVM_RUN must return
}

/// Unblocks SIGUSR2 (the kick) in the calling thread; returns whether it was blocked.
func unblockKick() -> Bool {
    var kickSet = sigset_t(), saved = sigset_t()
    sigemptyset(&kickSet)
    sigaddset(&kickSet, SIGUSR2)
    pthread_sigmask(SIG_UNBLOCK, &kickSet, &saved)
    return sigismember(&saved, SIGUSR2) == 1
}

func blockKick() {
    var kickSet = sigset_t()
    sigemptyset(&kickSet)
    sigaddset(&kickSet, SIGUSR2)
    pthread_sigmask(SIG_BLOCK, &kickSet, nil)
}
