import AxAddrSpace
import KVM

/// What the run needs to know of any guest, whatever loads it.
struct RunSettings: Sendable {
    var memorySize: UInt64
    var lazy: Bool
    var faultAround: UInt64
    var timeout: Double?
    var vcpus = 1
    var faultThreads: Int?
    var maxResident: UInt64?
    var serialToStdout = false
    var handleInterrupt = false
    var kvmPath = "/dev/kvm"
    var faultMap = false
    /// Take a snapshot during the run (`SnapshotTaker`).
    var snapshot: SnapshotPlan?
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
    /// A port I/O or MMIO exit of `vcpu`.
    func access(_ access: DeviceAccess, vcpu: VCPU) -> DeviceAction
    /// An MMIO access no device claimed: the end of the run, or nil to float the bus (reads
    /// 0xff, writes dropped).
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason?
    /// A `hlt` exit: the vCPU's outcome, or nil to resume (an in-kernel LAPIC halts).
    func halted(_ vcpu: VCPU) -> VCPUOutcome?
    /// A kick that was not a timeout, signal or stop (e.g. `IRQResampler`'s): look at the
    /// vCPU; the end of the run if the guest can no longer go on.
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason?
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
    /// paused.
    var snapshotKind: String { get }
    func snapshotBytes() -> [UInt8]
    /// A restore filled `memory` in place of `load`.
    func restored(memory: GuestMemory<P.Format>)
}

extension GuestLoader {
    func restored(memory: GuestMemory<P.Format>) {}
}
