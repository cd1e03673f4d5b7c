import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A RISC-V host: KVM in HS-mode (the H extension), G-stage tables, guest-page faults.
/// Compiled on every host (its pieces are tested anywhere); a binary runs it on riscv64 only.
/// The memtest guests and Linux (`RiscVLinuxLoader`) run here.
struct RiscV64Platform: Platform, OneRegSnapshots {
    let format: GStage
    var arch: GuestArch { .riscv64 }

    /// The format of the host's G-stage: KVM picks the widest mode the hart has, and
    /// reports its guest-physical address width (KVM_CAP_VM_GPA_BITS).
    init(system: KVMSystem?) {
        let bits = system.map { RiscV64Host(system: $0).gpaBits } ?? RiscV64Host.probeGPABits()
        format = RiscV64Host.format(gpaBits: bits)
    }

    /// The VM (RAM's end checked against the G-stage's reach) and `count` harts: the first
    /// runnable, the others stopped until the guest starts them through SBI HSM, which KVM
    /// serves — a memtest guest's hart 0 as Linux does (guests/riscv64/defs.inc).
    func createVM(system: KVMSystem, vcpus count: Int, ramEnd gpa: GuestPhysAddr, interrupts: InterruptModel) throws(VMMError) -> (VirtualMachine, [VCPU]) {
        let host = RiscV64Host(system: system)
        if host.gpaBits > 0 && gpa.raw > 1 << UInt64(host.gpaBits) {
            throw .badValue(what: "memory size", value: "\(gpa.raw - RiscV64Layout.ramBase) bytes",
                            reason: "RAM would end at GPA 0x\(String(gpa.raw, radix: 16)), beyond this host's \(host.gpaBits)-bit G-stage (KVM_CAP_VM_GPA_BITS)")
        }
        do {
            let vm = try system.createVM()
            var vcpus: [VCPU] = []
            for i in 0..<count {
                let v = try vm.createVCPU(id: UInt(i))
                try v.setMultiprocessingState(i > 0 ? RiscVLinuxLayout.mpStateStopped : RiscV64Host.mpStateRunnable)
                vcpus.append(v)
            }
            return (vm, vcpus)
        } catch {
            throw .kvm(error)
        }
    }

    func nestedFault(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault {
        RiscV64Faults.guestPageFault(gpa: gpa.raw, write: write).fault
            ?? NestedPageFault(gpa: gpa, access: write ? .write : .read, kind: .unknown)
    }

    func programCounter(_ vcpu: VCPU) -> UInt64 { (try? vcpu.register(RiscV64Register.pc)) ?? 0 }

    /// `wfi` waits in KVM; a halt exit ends the hart as a halt does elsewhere.
    func halted(_ vcpu: VCPU) -> VCPUOutcome { .halted(rip: programCounter(vcpu)) }

    func shutdownRegisters(_ vcpu: VCPU) -> ShutdownRegisters? { nil }

    /// arm64's exit: never produced by RISC-V KVM.
    func unemulatedAbort(esrISS: UInt64, ipa: UInt64, pc: UInt64) -> ExitReason {
        .unsupportedExit(reason: UInt32(KVM_EXIT_ARM_NISV), rip: pc)
    }

    /// RISC-V KVM emulates plain loads and stores outside memory (MMIO exits); anything else
    /// there — an instruction fetch, an AMO — makes KVM_RUN fail with EOPNOTSUPP
    /// (arch/riscv/kvm/vcpu_exit.c, gstage_page_fault).
    func runFailed(_ error: KVMError, vcpu: VCPU) -> ExitReason? {
        guard case let .ioctl(_, e) = error, e.rawValue == EOPNOTSUPP else { return nil }
        return .unemulatedAccess(what: "access outside memory other than a plain load or store (an instruction fetch, an AMO)",
                                 errno: e.rawValue, rip: programCounter(vcpu))
    }

    // Snapshots: every register KVM_GET_REG_LIST names (core, CSRs, FP, the timer, the ISA
    // and SBI extension switches) and the hart's MP state (`OneRegSnapshots`).
    func snapshotRefusal(interrupts: InterruptModel) -> String? {
        interrupts == .none ? nil : "snapshots of riscv64 Linux guests are not built yet (the PLIC and UART in axvm save no state): the memtest guests only"
    }

    func withRestoredLinux<B: RestoredLoaderBody>(_ source: RestoreSource, config: LinuxBootConfig, t0: UInt64, _ body: B) throws(VMMError) -> B.R {
        throw .snapshot(path: source.statePath, field: "arch", reason: "riscv64 Linux snapshots are not restored (their PLIC and UART state is not saved)")
    }

    func describeHost(system: KVMSystem?) -> [String] {
        let host = system.map { RiscV64Host(system: $0) }
        let bits = host?.gpaBits ?? 0
        let isa = system.flatMap { RiscV64Host.isa(system: $0) }
        return ["KVM flavour: RISC-V KVM in HS-mode (H extension)",
                "  G-stage: \(RiscV64Host.modeName(gpaBits: bits)) (\(bits == 0 ? "KVM_CAP_VM_GPA_BITS absent" : "\(bits)-bit guest-physical addresses")), modelled by the library as \(format.levels == 5 ? "Sv57x4" : format.levels == 4 ? "Sv48x4" : "Sv39x4")",
                "  guest ISA: \(isa ?? "unknown (KVM_GET_ONE_REG of config.isa failed)")",
                "host CPU: riscv64 (nested faults decoded as G-stage guest-page faults: scause 20/21/23, htval, stval)"]
    }

    func ramRanges(size: UInt64) -> [GuestPhysRange] { RiscV64Layout.ramRanges(size: size) }
    var romBase: GuestPhysAddr { GuestPhysAddr(RiscV64Layout.romBase) }
    var paramsAddress: GuestPhysAddr { GuestPhysAddr(RiscV64Layout.params) }
    func vcpuSlot(_ i: Int) -> GuestPhysAddr { GuestPhysAddr(RiscV64Layout.vcpuSlot(i)) }

    /// No boot data: the guests run untranslated (satp 0, KVM's reset value). Hart 0 gets
    /// pc = the entry, a0 = the parameter page, a1 = 0, sp = its stack; it starts the others
    /// itself (SBI HSM).
    func bootMemtest<F>(memory: GuestMemory<F>, params: GuestParams, image: GuestImage, vcpus: [VCPU]) throws(VMMError) {
        guard let first = vcpus.first else { return }
        do {
            for (id, value) in RiscV64Boot.bootHartRegisters(entry: image.loadAddress + image.entryOffset) {
                try first.setRegister(id, value)
            }
        } catch { throw .kvm(error) }
    }

    func attachMemtestDevices(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try RiscV64Devices.attachMemtest(&buses, serial: serial, reclaim: reclaim)
    }
}

/// The memtest boot hart's registers at entry (hart 0; the guest gives the harts it starts
/// through SBI HSM their own: a1 = the hart id, the stack from it).
enum RiscV64Boot {
    /// The (register id, value) pairs `bootMemtest` writes, in order: the pc last.
    static func bootHartRegisters(entry: UInt64) -> [(UInt64, UInt64)] {
        [(RiscV64Register.sp, RiscV64Layout.stackTop(vcpu: 0)),
         (RiscV64Register.a0, RiscV64Layout.params),
         (RiscV64Register.a1, 0),
         (RiscV64Register.pc, entry)]
    }
}

/// What a RISC-V KVM offers, for `axvm check` and VM creation.
public struct RiscV64Host: Sendable {
    /// KVM_CAP_VM_GPA_BITS (include/uapi/linux/kvm.h, Linux 5.18): the G-stage's
    /// guest-physical address width; 0 when the capability is absent.
    public var gpaBits: Int
    static let capGPABits: Int32 = 207
    /// KVM_MP_STATE_RUNNABLE.
    static let mpStateRunnable: UInt32 = 0

    public init(system: KVMSystem) {
        gpaBits = Int(system.checkExtension(Self.capGPABits))
    }

    /// `gpaBits` from a KVM opened for the question (0 when there is none).
    static func probeGPABits() -> Int {
        guard let system = try? KVMSystem() else { return 0 }
        return RiscV64Host(system: system).gpaBits
    }

    /// The G-stage mode for an address width: Sv39x4 41 bits, Sv48x4 50, Sv57x4 59.
    public static func modeName(gpaBits: Int) -> String {
        switch gpaBits {
        case 41: "Sv39x4"
        case 50: "Sv48x4"
        case 59: "Sv57x4"
        case 0: "unknown"
        default: "a \(gpaBits)-bit mode"
        }
    }

    /// The library's model of that mode (Sv48x4 when the width is unknown).
    public static func format(gpaBits: Int) -> GStage {
        switch gpaBits {
        case 41: .sv39x4()
        case 59: .sv57x4()
        default: .sv48x4()
        }
    }

    /// The guest's single-letter ISA extensions as KVM gives them (config.isa of a scratch
    /// vCPU), as "rv64" and the letters: e.g. "rv64imafdc".
    public static func isa(system: KVMSystem) -> String? {
        guard let vm = try? system.createVM(), let vcpu = try? vm.createVCPU(id: 0),
              let bits = try? vcpu.register(RiscV64Register.isa) else { return nil }
        return RiscVHarts.isaString(bits) + (bits >> 7 & 1 == 1 ? " (and h)" : "")
    }
}
