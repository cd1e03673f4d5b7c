import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// An arm64 host: KVM at EL2 (VHE or nVHE), Stage 2 tables, stage 2 aborts. Compiled on
/// every host (its pieces are tested anywhere); a binary runs it on arm64 only.
struct AArch64Platform: Platform, OneRegSnapshots {
    let format: Stage2
    var arch: GuestArch { .aarch64 }

    /// The VM (its IPA size checked against RAM's end), KVM_CAP_ARM_NISV_TO_USER enabled
    /// when KVM has it, and `vcpus` vCPUs initialized to the preferred target with PSCI 0.2.
    /// `.inKernel` (a Linux guest): every vCPU but the first starts powered off, for the
    /// guest to start through PSCI CPU_ON; the loader adds the vGIC (`ArmGIC`), which KVM
    /// wants after the vCPUs.
    func createVM(system: KVMSystem, vcpus count: Int, ramEnd gpa: GuestPhysAddr, interrupts: InterruptModel) throws(VMMError) -> (VirtualMachine, [VCPU]) {
        let ramEnd = gpa.raw
        let info = AArch64Host(system: system)
        // KVM's default VM type has a 40-bit IPA space; a host limited below that takes its
        // own limit as the type (KVM_VM_TYPE_ARM_IPA_SIZE).
        let ipaBits = info.ipaBits == 0 ? 40 : min(info.ipaBits, 40)
        if ramEnd > 1 << UInt64(ipaBits) {
            throw .badValue(what: "memory size", value: "\(ramEnd - AArch64Layout.ramBase) bytes",
                            reason: "RAM would end at IPA 0x\(String(ramEnd, radix: 16)), beyond this host's \(ipaBits)-bit IPA space (KVM_CAP_ARM_VM_IPA_SIZE)")
        }
        do {
            let vm = try system.createVM(type: ipaBits < 40 ? UInt(ipaBits) : 0)
            if info.nisvToUser { try vm.enableCapability(KVM_CAP_ARM_NISV_TO_USER, name: "KVM_CAP_ARM_NISV_TO_USER") }
            let target = try vm.preferredTarget()
            var vcpus: [VCPU] = []
            for i in 0..<count {
                let v = try vm.createVCPU(id: UInt(i))
                let off = i > 0 && interrupts == .inKernel ? AArch64Boot.featurePowerOff : 0
                let pmu = interrupts == .inKernel && info.pmu ? AArch64Boot.featurePMUv3 : 0
                try v.armInit(target: target, features: AArch64Boot.featurePSCI02 | off | pmu)
                vcpus.append(v)
            }
            return (vm, vcpus)
        } catch {
            throw .kvm(error)
        }
    }

    func nestedFault(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault {
        AArch64Faults.stage2Abort(ipa: gpa.raw, write: write).fault
            ?? NestedPageFault(gpa: gpa, access: write ? .write : .read, kind: .translation)
    }

    func programCounter(_ vcpu: VCPU) -> UInt64 { (try? vcpu.register(AArch64Register.pc)) ?? 0 }

    /// `wfi` blocks in KVM; a halt exit ends the vCPU like a halt with interrupts enabled.
    func halted(_ vcpu: VCPU) -> VCPUOutcome { .halted(rip: programCounter(vcpu)) }

    func shutdownRegisters(_ vcpu: VCPU) -> ShutdownRegisters? { nil }

    /// The abort KVM could not emulate, through the library's decoder: the record says what
    /// the guest did (a read or write, which fault), the IPA where.
    func unemulatedAbort(esrISS: UInt64, ipa: UInt64, pc: UInt64) -> ExitReason {
        let record = AArch64Faults.unemulated(esrISS: esrISS, ipa: ipa)
        let what = record.fault.map { "\($0)" } ?? "not a data abort"
        return .unemulatedAbort(ipa: record.ipa.raw, esr: record.esr, fault: what, rip: pc)
    }

    // Snapshots: every register KVM_GET_REG_LIST names (core, system, FP/SIMD, the timer
    // and its counter, the firmware pseudo-registers) and the vCPU's PSCI power state
    // (`OneRegSnapshots`); a Linux guest's vGIC, UART and virtio devices are its loader's
    // (`ArmLinuxLoader.snapshotBytes`).
    func snapshotRefusal(interrupts: InterruptModel) -> String? { nil }

    func withRestoredLinux<B: RestoredLoaderBody>(_ source: RestoreSource, config: LinuxBootConfig, t0: UInt64, _ body: B) throws(VMMError) -> B.R {
        try source.runLinux(ArmLinuxLoader.restoring(platform: self, bytes: source.state.loader, path: source.statePath,
                                                      ram: source.savedRAM, base: config, t0: t0), body)
    }

    func describeHost(system: KVMSystem?) -> [String] {
        let ipa = system.map { AArch64Host(system: $0).ipaBits } ?? 0
        let target = system.flatMap { AArch64Host.preferredTarget(system: $0) }
        return ["KVM flavour: arm64 KVM at EL2, \(AArch64Host.hypMode() ?? "VHE or nVHE unknown (kernel log not readable)")",
                "  IPA size: \(ipa == 0 ? "40 bits (KVM_CAP_ARM_VM_IPA_SIZE absent)" : "\(ipa) bits"), preferred target: \(target.map { "\($0)" } ?? "unknown")",
                "host CPU: arm64 (nested faults decoded as stage 2 aborts: ESR_EL2, HPFAR_EL2, FAR_EL2)"]
    }

    func ramRanges(size: UInt64) -> [GuestPhysRange] { AArch64Layout.ramRanges(size: size) }
    var romBase: GuestPhysAddr { GuestPhysAddr(AArch64Layout.romBase) }
    var paramsAddress: GuestPhysAddr { GuestPhysAddr(AArch64Layout.params) }
    func vcpuSlot(_ i: Int) -> GuestPhysAddr { GuestPhysAddr(AArch64Layout.vcpuSlot(i)) }

    func bootMemtest<F>(memory: GuestMemory<F>, params: GuestParams, image: GuestImage, vcpus: [VCPU]) throws(VMMError) {
        try memory.write(AArch64Layout.stage1Entries(ramEnd: params.ramEnd), at: GuestPhysAddr(AArch64Layout.stage1Table))
        for (i, v) in vcpus.enumerated() {
            do { try AArch64Boot.setupVCPU(v, entry: image.loadAddress + image.entryOffset, index: i) } catch { throw .kvm(error) }
        }
    }

    func attachMemtestDevices(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try AArch64Devices.attachMemtest(&buses, serial: serial, reclaim: reclaim)
    }
}

/// What an arm64 KVM offers, for `axvm check` and VM creation.
public struct AArch64Host: Sendable {
    /// KVM_CAP_ARM_VM_IPA_SIZE: the largest IPA size in bits (0: the capability is absent,
    /// and only the 40-bit default exists).
    public var ipaBits: Int
    public var nisvToUser: Bool
    /// KVM_CAP_ARM_PMU_V3: the vCPUs can have a PMUv3 (a Linux guest's get one).
    public var pmu: Bool

    public init(system: KVMSystem) {
        ipaBits = Int(system.checkExtension(KVM_CAP_ARM_VM_IPA_SIZE))
        nisvToUser = system.checkExtension(KVM_CAP_ARM_NISV_TO_USER) > 0
        pmu = system.checkExtension(KVM_CAP_ARM_PMU_V3) > 0
    }

    /// The preferred vCPU target (KVM_ARM_PREFERRED_TARGET on a scratch VM).
    public static func preferredTarget(system: KVMSystem) -> UInt32? {
        guard let vm = try? system.createVM() else { return nil }
        return try? vm.preferredTarget()
    }

    /// How the host kernel runs KVM: VHE (the kernel at EL2) or nVHE (a hyp stub at EL2),
    /// from the kernel log line KVM prints at boot ("VHE mode initialized" / "Hyp mode
    /// initialized"); nil when the log is not readable or says neither.
    public static func hypMode() -> String? {
        let size = 1 << 20
        var buffer = [CChar](repeating: 0, count: size)
        // klogctl(SYSLOG_ACTION_READ_ALL = 3): the kernel's ring buffer (needs privilege).
        let n = buffer.withUnsafeMutableBufferPointer { klogctl(3, $0.baseAddress, Int32(size)) }
        guard n > 0 else { return nil }
        let log = buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }
        func contains(_ needle: String) -> Bool { log.containsBytes(of: needle) }
        if contains("VHE mode initialized") { return "VHE (host kernel at EL2)" }
        if contains("Hyp mode initialized") { return "nVHE (hyp stub at EL2, host kernel at EL1)" }
        if contains("Protected nVHE mode initialized") { return "protected nVHE (pKVM)" }
        return nil
    }
}

