#if canImport(Glibc)
import Glibc
#endif
import AxAddrSpace
import CKVM
import KVM

/// VM and vCPU set-up of an AArch64 guest (compiled on every host; used on arm64 hosts).
enum AArch64Boot {
    /// KVM_ARM_VCPU_INIT feature bit 2: PSCI 0.2 (the guest may power off through HVC).
    static let featurePSCI02: UInt32 = 1 << 2

    /// The VM (its IPA size checked against RAM's end), KVM_CAP_ARM_NISV_TO_USER enabled
    /// when KVM has it, and `vcpus` vCPUs initialized to the preferred target.
    static func createVM(system: KVMSystem, vcpus count: Int, ramEnd: UInt64) throws(VMMError) -> (VirtualMachine, [VCPU]) {
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
                try v.armInit(target: target, features: featurePSCI02)
                vcpus.append(v)
            }
            return (vm, vcpus)
        } catch {
            throw .kvm(error)
        }
    }

    /// PC at the entry, PSTATE EL1h with interrupts masked, SP_EL1 its stack, x0 the
    /// parameter page, x1 its index, and the MMU on over the VMM's stage 1 identity map.
    static func setupVCPU(_ vcpu: VCPU, entry: UInt64, index: Int) throws(KVMError) {
        for (id, value) in registers(entry: entry, index: index) { try vcpu.setRegister(id, value) }
    }

    /// The (register id, value) pairs `setupVCPU` writes, in order.
    static func registers(entry: UInt64, index: Int) -> [(UInt64, UInt64)] {
        [(AArch64Register.mairEL1, AArch64SystemRegisters.mair),
         (AArch64Register.tcrEL1, AArch64SystemRegisters.tcr),
         (AArch64Register.ttbr0EL1, AArch64Layout.stage1Table),
         (AArch64Register.sctlrEL1, AArch64SystemRegisters.sctlr),
         (AArch64Register.pstate, AArch64SystemRegisters.pstate),
         (AArch64Register.spEL1, AArch64Layout.stackTop(vcpu: index)),
         (AArch64Register.x(0), AArch64Layout.params),
         (AArch64Register.x(1), UInt64(index)),
         (AArch64Register.pc, entry)]
    }
}

/// What an arm64 KVM offers, for `axvm check` and VM creation.
public struct AArch64Host: Sendable {
    /// KVM_CAP_ARM_VM_IPA_SIZE: the largest IPA size in bits (0: the capability is absent,
    /// and only the 40-bit default exists).
    public var ipaBits: Int
    public var nisvToUser: Bool

    public init(system: KVMSystem) {
        ipaBits = Int(system.checkExtension(KVM_CAP_ARM_VM_IPA_SIZE))
        nisvToUser = system.checkExtension(KVM_CAP_ARM_NISV_TO_USER) > 0
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

/// The AArch64 guests' MMIO devices (guests/aarch64/defs.inc).
enum AArch64Devices {
    enum Access { case none, handled, exit(UInt8), reclaim }

    /// Serves an MMIO exit at `gpa` if a device lives there.
    static func access(gpa: UInt64, isWrite: Bool, data: UnsafeMutableRawBufferPointer, serial: Serial) -> Access {
        switch gpa {
        case AArch64Layout.uart..<(AArch64Layout.uart + AArch64Layout.uartSize):
            if isWrite {
                if gpa == AArch64Layout.uart, let b = data.first { serial.out(b) }  // DR
            } else {
                for i in 0..<data.count { data[i] = 0 }  // FR: never busy, never full; others 0
            }
            return .handled
        case AArch64Layout.exitDevice:
            return isWrite ? .exit(data.first ?? 0) : zero(data)
        case AArch64Layout.reclaimDevice:
            return isWrite ? .reclaim : zero(data)
        default:
            return .none
        }
    }

    private static func zero(_ data: UnsafeMutableRawBufferPointer) -> Access {
        for i in 0..<data.count { data[i] = 0 }
        return .handled
    }
}
