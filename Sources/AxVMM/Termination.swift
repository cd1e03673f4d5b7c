#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import Synchronization

/// The one way a terminating signal ends axvm. SIGINT (Ctrl-C), SIGTERM (`kill`, systemd,
/// `timeout`), SIGHUP (the terminal closed) and SIGQUIT (Ctrl-\) are blocked from the start
/// of the process (`install`, the first thing both front ends do, before any other thread
/// exists, so every thread inherits the mask) and read off a signalfd by one thread, which
/// records the first of them and raises an event. Whatever runs then ends through it:
///
/// - a set-up step (reading files, populating RAM, loading a kernel) calls `check()` between
///   pieces of work and throws `VMMError.interrupted`, which the runner turns into a report;
/// - a running VM's watchdog polls `eventFD` and kicks the vCPUs;
/// - the front end prints the statistics, writes the JSON and exits with 128 + the signal.
///
/// An EPIPE on standard output ends a run the same way, as SIGPIPE would end a Unix tool
/// (`request(SIGPIPE)`).
public enum Termination {
    /// The signals handled (each ends the run with status 128 + its number).
    public static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    private static let installed = Atomic<Bool>(false)
    /// The first signal received (0: none yet).
    private static let received = Atomic<Int32>(0)
    /// An eventfd that becomes readable, and stays so, once a signal has arrived (-1 until
    /// `install` made it). Never read: every poller sees it.
    private static let event = Atomic<Int32>(-1)

    /// Blocks the signals in the calling thread, and so in every thread it creates later,
    /// and starts the thread that reads them. Call it first in `main`. Idempotent.
    public static func install() throws(VMMError) {
        guard installed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        var set = signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
        // SIGUSR1 asks for a snapshot: blocked in every thread from the start too, so that it
        // never kills the process; a run with a snapshot plan reads it from its own signalfd
        // (`SnapshotTaker`), any other run leaves it pending, unused.
        var usr1 = sigset_t()
        sigemptyset(&usr1)
        sigaddset(&usr1, SIGUSR1)
        pthread_sigmask(SIG_BLOCK, &usr1, nil)
        // A write to a closed pipe returns EPIPE (`StandardStreams` ends the run through
        // `request(SIGPIPE)`) instead of killing the process half-way through its results.
        ckvm_ignore_sigpipe()
        let sfd = signalfd(-1, &set, Int32(SFD_CLOEXEC))
        guard sfd >= 0 else { throw .host("signalfd: \(errnoString(errno))") }
        let efd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard efd >= 0 else { throw .host("eventfd: \(errnoString(errno))") }
        event.store(efd, ordering: .releasing)
        let reader = try OSThread(.helper, name: "axvm-signals") {
            var info = signalfd_siginfo()
            while true {
                let n = read(sfd, &info, MemoryLayout<signalfd_siginfo>.size)
                if n == MemoryLayout<signalfd_siginfo>.size {
                    request(Int32(bitPattern: info.ssi_signo))
                } else if n < 0 && errno != EINTR {
                    return
                }
            }
        }
        reader.detach()
    }

    static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return set
    }

    /// Ends the run as if `signal` had arrived (the first request wins).
    public static func request(_ signal: Int32) {
        _ = received.compareExchange(expected: 0, desired: signal, ordering: .acquiringAndReleasing)
        let efd = event.load(ordering: .acquiring)
        if efd >= 0 { var one: UInt64 = 1; _ = write(efd, &one, 8) }
    }

    /// The first signal received, if any.
    public static var signal: Int32? {
        let s = received.load(ordering: .acquiring)
        return s == 0 ? nil : s
    }

    /// The event to poll for (readable once a signal arrived); -1 without `install`.
    static var eventFD: Int32 { event.load(ordering: .acquiring) }

    /// Throws `.interrupted` if a signal has arrived: called between the pieces of a long
    /// set-up step.
    static func check() throws(VMMError) {
        if let s = signal { throw .interrupted(signal: s) }
    }

    /// A phase boundary: `check()`, after pausing if `AXVM_PAUSE_AT` names this phase.
    static func checkpoint(_ phase: String) throws(VMMError) {
        pause(at: phase)
        try check()
    }

    // --- test hook ----------------------------------------------------------------------

    /// `AXVM_PAUSE_AT=PHASE` (setup, populate, load, fault): axvm says "axvm: paused at
    /// PHASE" on stderr when it reaches the phase and waits there (at most `pauseLimit`
    /// seconds) for a signal, which then ends the run from that phase. For tests that must
    /// deliver a real signal in a given phase, without racing the clock.
    static let pausePhase: String? = getenv("AXVM_PAUSE_AT").map { String(cString: $0) }
    static let pauseLimitMillis: Int32 = 30_000
    private static let paused = Atomic<Bool>(false)

    /// Pauses once per process if `AXVM_PAUSE_AT` names `phase` (see `pausePhase`).
    static func pause(at phase: String) {
        guard pausePhase == phase, signal == nil,
              paused.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        StandardStreams.err("axvm: paused at \(phase) (AXVM_PAUSE_AT)")
        var p = pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0)
        guard p.fd >= 0 else { return }
        let end = nowNanos() + UInt64(pauseLimitMillis) * 1_000_000
        while signal == nil {
            let now = nowNanos()
            if now >= end { return }
            _ = poll(&p, 1, Int32((end - now) / 1_000_000 + 1))
        }
    }

    /// The signal's name and what usually sends it, for reports.
    public static func describe(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: "SIGINT (Ctrl-C)"
        case SIGTERM: "SIGTERM"
        case SIGHUP: "SIGHUP (terminal closed)"
        case SIGQUIT: "SIGQUIT"
        case SIGPIPE: "SIGPIPE (standard output closed)"
        default: "signal \(signal)"
        }
    }
}
