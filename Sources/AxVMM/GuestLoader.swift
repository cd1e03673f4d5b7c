import AxAddrSpace
import KVM

/// How a guest runs, whatever loads it: the part of every configuration (`VMConfig`,
/// `LinuxBootConfig`, `RestoreConfig`) that the run path (`Runner`) reads. The command line
/// fills it (`CommandOptions`); a loader hands it to the runner as it is.
public struct RunSettings: Sendable, Equatable {
    /// Guest RAM in bytes, a multiple of 4 KiB (between 4 MiB and 64 GiB).
    public var memorySize: UInt64
    /// Populate RAM on first touch (true) or all up front.
    public var lazy = true
    /// Pages populated per fault: 4 KiB … 2 MiB, a power of two.
    public var faultAround: UInt64
    /// Stop the guest after this many seconds (nil: never): finite, positive, at most
    /// `VMConfig.maxTimeout`.
    public var timeout: Double?
    /// vCPUs, each on its own thread.
    public var vcpus = 1
    /// Threads serving the userfaultfd's events: 1 … 64 (nil: one per vCPU, at most the
    /// host's CPUs).
    public var faultThreads: Int?
    /// Most guest memory the host populates (nil: all of it). A lazy fault beyond it is out of
    /// memory: the pager fails and the run ends with `.pagerFailure`.
    public var maxResident: UInt64?
    /// Also copy the guest's serial output to stdout.
    public var serialToStdout = false
    /// End the run cleanly on SIGINT, SIGTERM, SIGHUP and SIGQUIT (for the CLI):
    /// `Termination.install()` (which the front ends call first thing anyway) and the
    /// watchdog kicks the vCPUs when one arrives.
    public var handleInterrupt = false
    public var kvmPath = "/dev/kvm"
    /// Record when each part of RAM was first touched and faults over time (`--fault-map`).
    public var faultMap = false
    /// Take a snapshot during the run (`SnapshotTaker`).
    public var snapshot: SnapshotPlan?
    /// Confine the set-up thread at the end of set-up (`Sandbox.confineMain`; the command line
    /// turns the sandbox on before any thread starts, unless `--no-sandbox`).
    public var sandbox = false
    /// Answer requests on a control socket at this path (`ControlSocket`, `--api-socket`).
    public var apiSocket: String?

    public init(memorySize: UInt64, lazy: Bool = true, faultAround: UInt64, timeout: Double?, vcpus: Int = 1,
                faultThreads: Int? = nil, maxResident: UInt64? = nil, serialToStdout: Bool = false,
                handleInterrupt: Bool = false, kvmPath: String = "/dev/kvm", faultMap: Bool = false,
                snapshot: SnapshotPlan? = nil) {
        self.memorySize = memorySize
        self.lazy = lazy
        self.faultAround = faultAround
        self.timeout = timeout
        self.vcpus = vcpus
        self.faultThreads = faultThreads
        self.maxResident = maxResident
        self.serialToStdout = serialToStdout
        self.handleInterrupt = handleInterrupt
        self.kvmPath = kvmPath
        self.faultMap = faultMap
        self.snapshot = snapshot
    }
}

/// A configuration that holds run settings (`VMConfig`, `LinuxBootConfig`, `RestoreConfig`):
/// they read and set them by their own names (`config.lazy`), one `settings` value underneath.
public protocol RunConfiguration {
    var settings: RunSettings { get set }
}

extension RunConfiguration {
    public var memorySize: UInt64 { get { settings.memorySize } set { settings.memorySize = newValue } }
    public var lazy: Bool { get { settings.lazy } set { settings.lazy = newValue } }
    public var faultAround: UInt64 { get { settings.faultAround } set { settings.faultAround = newValue } }
    public var timeout: Double? { get { settings.timeout } set { settings.timeout = newValue } }
    public var vcpus: Int { get { settings.vcpus } set { settings.vcpus = newValue } }
    public var faultThreads: Int? { get { settings.faultThreads } set { settings.faultThreads = newValue } }
    public var maxResident: UInt64? { get { settings.maxResident } set { settings.maxResident = newValue } }
    public var serialToStdout: Bool { get { settings.serialToStdout } set { settings.serialToStdout = newValue } }
    public var handleInterrupt: Bool { get { settings.handleInterrupt } set { settings.handleInterrupt = newValue } }
    public var kvmPath: String { get { settings.kvmPath } set { settings.kvmPath = newValue } }
    public var faultMap: Bool { get { settings.faultMap } set { settings.faultMap = newValue } }
    public var snapshot: SnapshotPlan? { get { settings.snapshot } set { settings.snapshot = newValue } }
}

/// What differs between kinds of guest on one run path (`Runner`): what goes into memory
/// and which registers (`load`), which devices answer the guest's port I/O and MMIO, what an
/// unclaimed access or a `hlt` means, and what the report adds. `MemtestLoader` runs the
/// assembly guests of guests/; `LinuxLoader` a Linux kernel. A loader is made for one run
/// and used from its vCPU threads (its devices do their own locking).
protocol GuestLoader: AnyObject, Sendable {
    associatedtype P: Platform
    var platform: P { get }
    var settings: RunSettings { get }
    /// The RAM areas, in order.
    var ram: [GuestPhysRange] { get }
    var interrupts: InterruptModel { get }
    /// Where the test region starts: faults at or above it are counted apart in the
    /// statistics, and the reclaim device depopulates RAM from it up (0: all of RAM).
    var testRegionBase: GuestPhysAddr { get }

    /// Fills guest memory (other areas such as a ROM included) and sets each vCPU's
    /// registers. A terminating signal may end it (`Termination.check`).
    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError)
    /// Starts what runs beside the vCPUs (`kick` stops them all to look at something).
    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError)
    /// Stops it again (after the vCPUs ended).
    func stop()
    /// Puts the guest's devices on the buses, once guest memory is set up (a device may
    /// reach guest memory). The run loop sends every port I/O and MMIO exit through them.
    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError)
    /// An MMIO access no device claimed: the end of the run, or nil to float the bus (reads
    /// 0xff, writes dropped).
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason?
    /// A `hlt` exit: the vCPU's outcome, or nil to resume (an in-kernel LAPIC halts).
    func halted(_ vcpu: VCPU) -> VCPUOutcome?
    /// A kick that was not a timeout, signal or stop (e.g. `IRQResampler`'s): look at the
    /// vCPU; the end of the run if the guest can no longer go on.
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason?
    /// A firmware call KVM handed to the VMM (riscv64's SBI): the (error, value) the guest
    /// gets, or the end of the run.
    func firmwareCall(_ call: SBICall, vcpu: Int) -> FirmwareAnswer
    /// Where the guest stands at a timeout, for its report (nil: nothing to add).
    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String?
    /// The guest's own results, added to the report after the run.
    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome])
    /// What the report says of the guest when the run ended before it started (a signal
    /// during set-up).
    func finishEarly(_ report: inout RunReport)
    /// Calls `action` the first time the guest's console prints `text` (a snapshot trigger).
    func watchConsole(_ text: String, _ action: @escaping @Sendable () -> Void)
    /// What a snapshot keeps of this loader: its kind ("memtest", "linux") and the bytes a
    /// restore makes it again from (configuration, device state). Called with every vCPU
    /// and device paused, before guest memory is saved (an in-kernel device may write its
    /// tables into guest memory: arm64's ITS).
    var snapshotKind: String { get }
    func snapshotBytes() throws(VMMError) -> [UInt8]
    /// Around a snapshot's writing (every vCPU paused): devices that run on threads of
    /// their own finish what they are doing and hold new work until `resumeDevices`, so
    /// that their state and guest memory agree while both are written.
    func pauseDevices()
    func resumeDevices()
    /// A control socket request this guest's devices answer (`/balloon`); nil: not theirs.
    /// Called on the control socket's thread.
    func control(_ request: ControlRequest) -> ControlResponse?
    /// A restore filled `memory` in place of `load`: the loader makes what `load` would
    /// have made besides memory (arm64's vGIC and PMU), before the vCPUs' state is restored.
    func restored(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError)
}

/// What a firmware call gets: an SBI error and value (`SBI.notSupported` for a call the
/// loader does not serve), or the run's end.
enum FirmwareAnswer: Sendable {
    case answer(error: Int64, value: UInt64)
    case end(ExitReason)
}

/// SBI's error codes (SBI specification, "Standard SBI Errors").
enum SBI {
    static let success: Int64 = 0
    static let failed: Int64 = -1
    static let notSupported: Int64 = -2
    static let invalidParam: Int64 = -3
}

extension GuestLoader {
    /// A guest with no firmware calls of its own (the memtest guests, x86, arm64): every
    /// call is "not supported", as SBI answers an extension it does not have.
    func firmwareCall(_ call: SBICall, vcpu: Int) -> FirmwareAnswer { .answer(error: SBI.notSupported, value: 0) }
    func restored(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {}
    func pauseDevices() {}
    func resumeDevices() {}
    func control(_ request: ControlRequest) -> ControlResponse? { nil }
}
