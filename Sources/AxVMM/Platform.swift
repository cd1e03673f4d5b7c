import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// What one host architecture brings to a run (`X86Platform`, `AArch64Platform`): the
/// nested page table format and the fault record its MMU produces, how a VM and its vCPUs
/// are made, the memtest guests' layout, boot and devices, and how a vCPU's state reads in
/// reports. The run path (`Runner`) only talks to this protocol; which platform a binary
/// carries is chosen by `#if arch` in `Platforms.host` and nowhere else.
protocol Platform: Sendable {
    associatedtype Format: NestedPagingFormat
    var format: Format { get }
    var arch: GuestArch { get }

    /// The VM and `vcpus` vCPUs; `interrupts`: what the guest needs from KVM.
    func createVM(system: KVMSystem, vcpus: Int, ramEnd: GuestPhysAddr, interrupts: InterruptModel) throws(VMMError) -> (VirtualMachine, [VCPU])
    /// The record a hardware nested fault at `gpa` carries, decoded by the library's decoder
    /// for this MMU (#NPF, EPT violation, stage 2 abort): what the pager hands to
    /// `handlePageFault` for a userfaultfd event.
    func nestedFault(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault
    /// The vCPU's program counter, for reports (0 if KVM will not say).
    func programCounter(_ vcpu: VCPU) -> UInt64
    /// What a `hlt`/`wfi` exit means for a vCPU that has no interrupt controller.
    func halted(_ vcpu: VCPU) -> VCPUOutcome
    /// The registers after a shutdown (triple fault), when KVM kept them.
    func shutdownRegisters(_ vcpu: VCPU) -> ShutdownRegisters?
    /// An abort KVM could not emulate (arm64's KVM_EXIT_ARM_NISV), as the run's end.
    func unemulatedAbort(esrISS: UInt64, ipa: UInt64, pc: UInt64) -> ExitReason
    /// A KVM_RUN that failed because of what the guest did, as the run's end (nil: a VMM
    /// error). riscv64 KVM fails with EOPNOTSUPP on an access outside memory it cannot emulate.
    func runFailed(_ error: KVMError, vcpu: VCPU) -> ExitReason?
    /// `axvm check`'s lines on this host's KVM and CPU (`system`: the opened KVM, if any).
    func describeHost(system: KVMSystem?) -> [String]

    /// Boots a Linux kernel (`LinuxMachine.boot`): reads and checks every input before
    /// KVM is opened, then runs it through `Runner` with this platform's Linux loader.
    func bootLinux(_ c: LinuxBootConfig, t0: UInt64) throws(LinuxBootError) -> RunReport

    // --- snapshots (`SnapshotTaker`, `Snapshots.restore`) ----------------------------------
    /// Why a guest with `interrupts` cannot be snapshotted on this platform (nil: it can).
    func snapshotRefusal(interrupts: InterruptModel) -> String?
    /// The bytes every saved vCPU and VM state has when the platform's structures fix them
    /// (x86); nil: they follow from the host's KVM (`OneRegState`: its register list), the
    /// first vCPU saved sets the size for all, and `restoreVCPU` checks what it reads.
    var fixedStateSizes: (vcpu: Int, vm: Int)? { get }
    /// A vCPU's whole state (registers, FPU, MSRs, LAPIC, events, …) as bytes, and back
    /// (`path`: the state file, for errors). Called on the vCPU's own thread, outside KVM_RUN.
    func saveVCPU(_ vcpu: VCPU, system: KVMSystem) throws(VMMError) -> [UInt8]
    func restoreVCPU(_ vcpu: VCPU, _ state: [UInt8], path: String) throws(VMMError)
    /// Makes the loader of a restored Linux guest from the snapshot's loader bytes (with
    /// `config`, the restore's own settings, over them) and runs `body` with it through
    /// `source.runLinux`; a platform that cannot restore Linux guests says why.
    func withRestoredLinux<B: RestoredLoaderBody>(_ source: RestoreSource, config: LinuxBootConfig, t0: UInt64, _ body: B) throws(VMMError) -> B.R
    /// The VM's in-kernel devices and clock, and back.
    func saveVM(_ vm: VirtualMachine) throws(VMMError) -> [UInt8]
    func restoreVM(_ vm: VirtualMachine, _ state: [UInt8]) throws(VMMError)
    // --- the memtest guests (guests/, `MemtestLoader`) --------------------------------------
    /// RAM areas for `size` bytes of RAM.
    func ramRanges(size: UInt64) -> [GuestPhysRange]
    /// The read-only area, the parameter page, vCPU i's result slot in it.
    var romBase: GuestPhysAddr { get }
    var paramsAddress: GuestPhysAddr { get }
    func vcpuSlot(_ i: Int) -> GuestPhysAddr
    /// Boot data (page tables, descriptor tables) and each vCPU's registers for `image`.
    func bootMemtest<F>(memory: GuestMemory<F>, params: GuestParams, image: GuestImage, vcpus: [VCPU]) throws(VMMError)
    /// Puts the memtest guests' devices on the buses: console, exit, reclaim.
    func attachMemtestDevices(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError)
}

extension Platform {
    func runFailed(_ error: KVMError, vcpu: VCPU) -> ExitReason? { nil }
}

/// What a guest needs from KVM's in-kernel devices.
enum InterruptModel: Sendable {
    /// Nothing: the memtest guests poll, and a `hlt` ends a vCPU.
    case none
    /// A PC's interrupt controllers and timer in the kernel (x86: PIC, IOAPIC, LAPIC, PIT).
    case inKernel
}


/// An architecture axvm runs guests of, as the core sees it. The core never compares
/// architectures: it asks this description, and each platform writes its own
/// (`GuestArch.x86_64` in X86/X86Layout.swift, `.aarch64` in AArch64/AArch64Layout.swift,
/// `.riscv64` in RiscV64/RiscV64Layout.swift). A new architecture adds one of these and
/// names it in `known`.
public struct GuestArch: Hashable, Sendable, CustomStringConvertible {
    /// Its name: uname(2)'s machine field, and what snapshots record.
    public let rawValue: String
    /// Where guest RAM starts (0 on x86, 1 GiB on arm64, 2 GiB on riscv64).
    public let ramBase: UInt64
    /// Where a memtest guest's ROM lies (`Platform.romBase`).
    public let romBase: UInt64
    /// The name the guest's program counter has in reports.
    public let pcName: String
    /// Where scripts/build-guests.sh puts this architecture's memtest guests.
    public let guestDirectory: String
    /// The memtest image modes (`GuestImage` header) this architecture runs.
    public let imageModes: [GuestImage.Mode]
    /// What a Linux boot on this architecture takes and refuses (`LinuxBootConfig`).
    public let linux: LinuxTraits
    private let layout: @Sendable (UInt64) -> [GuestPhysRange]
    private let hole: @Sendable (UInt64) -> (start: UInt64, size: UInt64)

    /// What differs between the architectures' Linux boots, as the checks of a boot's
    /// options see it.
    public struct LinuxTraits: Sendable {
        /// The kernel command line when none is given.
        public var defaultCmdline: String
        /// Virtio devices are described in ACPI tables (so they need them).
        public var virtioNeedsACPI: Bool
        /// `--raw` (a headerless binary) can be booted.
        public var bootsRawBinaries: Bool
        /// The serial port's interrupt is edge-triggered and re-delivered by the VMM
        /// (`IRQResampler`), which the statistics then count.
        public var resamplesSerialIRQ: Bool
        /// How the guest powers the machine off and resets it, for reports ("ACPI sleep
        /// state S5", "PSCI SYSTEM_RESET: reboot").
        public var powerOff: String
        public var reset: String
    }

    /// `layout(size)`: the RAM areas of `size` bytes; `hole(size)`: the start and size of the
    /// gap in them the memtest guests skip (size 0: none).
    init(name: String, ramBase: UInt64, romBase: UInt64, pcName: String, guestDirectory: String,
         imageModes: [GuestImage.Mode], linux: LinuxTraits,
         layout: @escaping @Sendable (UInt64) -> [GuestPhysRange],
         hole: @escaping @Sendable (UInt64) -> (start: UInt64, size: UInt64) = { _ in (UInt64.max, 0) }) {
        self.rawValue = name
        self.ramBase = ramBase
        self.romBase = romBase
        self.pcName = pcName
        self.guestDirectory = guestDirectory
        self.imageModes = imageModes
        self.linux = linux
        self.layout = layout
        self.hole = hole
    }

    /// Every architecture axvm knows.
    public static let known: [GuestArch] = [.x86_64, .aarch64, .riscv64]

    /// The architecture called `rawValue`, if axvm knows it.
    public init?(rawValue: String) {
        guard let a = Self.known.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = a
    }

    /// From uname(2)'s machine field (x86_64 when it names none axvm knows).
    public static let host: GuestArch = {
        var u = utsname()
        guard uname(&u) == 0 else { return .x86_64 }
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return GuestArch(rawValue: machine) ?? .x86_64
    }()

    /// The RAM areas of `size` bytes on this architecture (what `Platform.ramRanges` gives).
    public func ramRanges(size: UInt64) -> [GuestPhysRange] { layout(size) }
    /// Where RAM of `size` bytes has a gap the memtest guests skip, and how large (size 0: none).
    public func ramHole(size: UInt64) -> (start: UInt64, size: UInt64) { hole(size) }

    public static func == (a: GuestArch, b: GuestArch) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }
    public var description: String { rawValue }
    /// The names of every known architecture, for messages.
    public static var knownNames: String { known.map { $0.rawValue }.joined(separator: ", ") }
}

/// Which nested-fault record the host CPU produces (the host's MMU decides the format of
/// the fault the library decodes).
public enum HostCPU: Sendable {
    case amd, intel, arm64, riscv64

    /// arm64 and riscv64 from uname; on x86 the vendor from /proc/cpuinfo's vendor_id, AMD if unknown.
    public static func detect() -> HostCPU {
        if GuestArch.host == .aarch64 { return .arm64 }
        if GuestArch.host == .riscv64 { return .riscv64 }
        guard let f = fopen("/proc/cpuinfo", "r") else { return .amd }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let bytes = line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            if bytes.starts(with: "vendor_id".utf8) { return bytes.containsBytes(of: "GenuineIntel") ? .intel : .amd }
        }
        return .amd
    }
}

/// Runs `body` with this host's platform: the only place that chooses one.
enum Platforms {
    /// Something to do with a platform, whichever it is.
    protocol Job {
        associatedtype Result
        func run<P: Platform>(_ platform: P) throws(VMMError) -> Result
    }

    static func withHost<J: Job>(_ job: J) throws(VMMError) -> J.Result {
        #if arch(x86_64)
        switch HostCPU.detect() {
        case .intel: return try job.run(X86Platform(format: EPT(), vendor: .intel))
        default: return try job.run(X86Platform(format: NPT(), vendor: .amd))
        }
        #elseif arch(arm64)
        // A 40-bit IPA space, as KVM's default VM type (`AArch64Platform.createVM` checks
        // the host's limit).
        let format: Stage2
        do { format = try Stage2(levels: 4, ipaBits: 40) } catch { throw .addrSpace(error) }
        return try job.run(AArch64Platform(format: format))
        #elseif arch(riscv64)
        return try job.run(RiscV64Platform(system: nil))
        #else
        throw .host("axvm runs on x86_64, arm64 and riscv64 hosts")
        #endif
    }
}
