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
    /// `axvm check`'s lines on this host's KVM and CPU (`system`: the opened KVM, if any).
    func describeHost(system: KVMSystem?) -> [String]

    /// Boots a Linux kernel (`LinuxMachine.boot`): reads and checks every input before
    /// KVM is opened, then runs it through `Runner` with this platform's Linux loader.
    func bootLinux(_ c: LinuxBootConfig, t0: UInt64) throws(LinuxBootError) -> RunReport

    // --- snapshots (`SnapshotTaker`, `Snapshots.restore`) ----------------------------------
    /// Bytes of one vCPU's and of the VM's saved state on this platform (0: no snapshots).
    var vcpuStateSize: Int { get }
    var vmStateSize: Int { get }
    /// A vCPU's whole state (registers, FPU, MSRs, LAPIC, events, …) as bytes, and back.
    /// Called on the vCPU's own thread, outside KVM_RUN.
    func saveVCPU(_ vcpu: VCPU, system: KVMSystem) throws(VMMError) -> [UInt8]
    func restoreVCPU(_ vcpu: VCPU, _ state: [UInt8]) throws(VMMError)
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

/// What a guest needs from KVM's in-kernel devices.
enum InterruptModel: Sendable {
    /// Nothing: the memtest guests poll, and a `hlt` ends a vCPU.
    case none
    /// A PC's interrupt controllers and timer in the kernel (x86: PIC, IOAPIC, LAPIC, PIT).
    case inKernel
}


/// The guest architecture axvm runs: the host's own (KVM runs guests of its host's ISA).
public enum GuestArch: String, Sendable {
    case x86_64, aarch64

    /// From uname(2)'s machine field.
    public static let host: GuestArch = {
        var u = utsname()
        guard uname(&u) == 0 else { return .x86_64 }
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return machine == "aarch64" ? .aarch64 : .x86_64
    }()

    /// Where guest RAM starts: 0 on x86, 1 GiB on arm64 (`AArch64Layout.ramBase`).
    public var ramBase: UInt64 { self == .aarch64 ? AArch64Layout.ramBase : 0 }
    /// The RAM areas of `size` bytes on this architecture (what `Platform.ramRanges` gives).
    public func ramRanges(size: UInt64) -> [GuestPhysRange] {
        self == .aarch64 ? AArch64Layout.ramRanges(size: size) : X86Layout.ramRanges(size: size)
    }
    /// Where a memtest guest's ROM lies (`Platform.romBase`).
    public var romBase: UInt64 { self == .aarch64 ? AArch64Layout.romBase : X86Layout.romBase }

    /// The name the guest's program counter has in reports.
    public var pcName: String { self == .aarch64 ? "pc" : "rip" }
}

/// Which nested-fault record the host CPU produces (the host's MMU decides the format of
/// the fault the library decodes).
public enum HostCPU: Sendable {
    case amd, intel, arm64

    /// arm64 from uname; on x86 the vendor from /proc/cpuinfo's vendor_id, AMD if unknown.
    public static func detect() -> HostCPU {
        if GuestArch.host == .aarch64 { return .arm64 }
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
        #else
        throw .host("axvm runs on x86_64 and arm64 hosts")
        #endif
    }
}
