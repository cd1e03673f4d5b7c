import KVM

/// arm64's in-kernel interrupt controller for a Linux guest: a GICv3 (distributor and one
/// redistributor per vCPU) through KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_V3), or a GICv2
/// (distributor and CPU interface) where the host has no v3 (Documentation/virt/kvm/devices/
/// arm-vgic-v3.rst, arm-vgic.rst). Made after the vCPUs, before the first KVM_RUN.
struct ArmGIC {
    enum Version: Sendable, Equatable { case v3, v2 }

    /// Which GIC, for how many vCPUs, with an ITS or not: what the device tree describes.
    struct Layout: Sendable {
        let version: Version
        let vcpus: Int
        var its = false
    }

    var layout: Layout
    /// Each vCPU's MPIDR_EL1: its `reg` in the device tree, and how the vGIC's attributes
    /// name its redistributor and CPU interface.
    let mpidrs: [UInt64]
    /// The device's fd: the vGIC lives as long as the VM, this keeps its handle.
    let device: KVMDevice
    /// A GICv3's ITS (KVM_DEV_TYPE_ARM_VGIC_ITS), when the host's KVM makes one.
    var itsDevice: KVMDevice?

    // enum kvm_device_type (include/uapi/linux/kvm.h).
    static let typeV2: UInt32 = 5
    static let typeV3: UInt32 = 7
    static let typeITS: UInt32 = 8
    static let itsAddress: UInt64 = 4             // KVM_VGIC_ITS_ADDR_TYPE
    /// The ITS's frames: control and translation, 64 KiB each.
    static let itsSize: UInt64 = 0x2_0000
    // arch/arm64/include/uapi/asm/kvm.h (numbers, so that x86 builds compile this too).
    static let groupAddress: UInt32 = 0           // KVM_DEV_ARM_VGIC_GRP_ADDR
    static let groupDistributor: UInt32 = 1       // KVM_DEV_ARM_VGIC_GRP_DIST_REGS
    static let groupNumberOfIRQs: UInt32 = 3      // KVM_DEV_ARM_VGIC_GRP_NR_IRQS
    static let groupControl: UInt32 = 4           // KVM_DEV_ARM_VGIC_GRP_CTRL
    static let groupRedistributor: UInt32 = 5     // KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
    static let groupCPUSysregs: UInt32 = 6        // KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS
    static let groupLevelInfo: UInt32 = 7         // KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO
    static let groupITS: UInt32 = 8               // KVM_DEV_ARM_VGIC_GRP_ITS_REGS
    static let controlInit: UInt64 = 0            // KVM_DEV_ARM_VGIC_CTRL_INIT
    static let itsSaveTables: UInt64 = 1          // KVM_DEV_ARM_ITS_SAVE_TABLES
    static let itsRestoreTables: UInt64 = 2       // KVM_DEV_ARM_ITS_RESTORE_TABLES
    static let savePendingTables: UInt64 = 3      // KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES
    static let v2Distributor: UInt64 = 0          // KVM_VGIC_V2_ADDR_TYPE_DIST
    static let v2CPUInterface: UInt64 = 1         // KVM_VGIC_V2_ADDR_TYPE_CPU
    static let v3Distributor: UInt64 = 2          // KVM_VGIC_V3_ADDR_TYPE_DIST
    static let v3Redistributors: UInt64 = 3       // KVM_VGIC_V3_ADDR_TYPE_REDIST

    /// Interrupt lines: 32 private (SGIs, PPIs) and 96 shared; a multiple of 32.
    static let lines: UInt32 = 128

    /// Sizes of the MMIO frames (GIC architecture specification): the v3 distributor 64 KiB,
    /// each redistributor 2 × 64 KiB; the v2 distributor 4 KiB and CPU interface 8 KiB.
    static let v3DistributorSize: UInt64 = 0x1_0000
    static let v3RedistributorSize: UInt64 = 0x2_0000
    static let v2DistributorSize: UInt64 = 0x1000
    static let v2CPUInterfaceSize: UInt64 = 0x2000

    /// A GICv3, or a GICv2 if KVM cannot make a v3 (ENODEV: a host GIC without v3 CPU
    /// interfaces), at `ArmLinuxLayout`'s addresses, initialized for `vcpus`.
    static func create(vm: VirtualMachine, vcpus: [VCPU]) throws(KVMError) -> ArmGIC {
        var mpidrs: [UInt64] = []
        for v in vcpus { mpidrs.append(try v.register(AArch64Register.mpidrEL1)) }
        var gic: ArmGIC
        do {
            gic = ArmGIC(layout: Layout(version: .v3, vcpus: vcpus.count), mpidrs: mpidrs,
                         device: try vm.createDevice(type: typeV3, name: "vGICv3"))
        } catch {
            guard case .ioctl(_, .noSuchDevice) = error else { throw error }
            gic = ArmGIC(layout: Layout(version: .v2, vcpus: vcpus.count), mpidrs: mpidrs,
                         device: try vm.createDevice(type: typeV2, name: "vGICv2"))
        }
        for (attribute, address, what) in gic.frames {
            try gic.device.set(group: groupAddress, attribute: attribute, address, what: what)
        }
        try gic.device.set(group: groupNumberOfIRQs, attribute: 0, lines, what: "\(lines) interrupt lines")
        // A v3's ITS (arm-vgic-its.rst): made, placed and initialized before the GIC's own
        // initialization; a KVM without one (ENODEV) leaves the GIC without.
        if gic.layout.version == .v3 {
            do {
                let its = try vm.createDevice(type: typeITS, name: "vGIC ITS")
                try its.set(group: groupAddress, attribute: itsAddress, ArmLinuxLayout.gicITS, what: "ITS base")
                try its.command(group: groupControl, attribute: controlInit, what: "ITS CTRL_INIT")
                gic.itsDevice = its
                gic.layout.its = true
            } catch {
                guard case .ioctl(_, .noSuchDevice) = error else { throw error }
            }
        }
        try gic.device.command(group: groupControl, attribute: controlInit, what: "CTRL_INIT")
        return gic
    }

    /// The KVM address attribute, base and name of each MMIO frame.
    private var frames: [(UInt64, UInt64, String)] {
        switch layout.version {
        case .v3: [(Self.v3Distributor, ArmLinuxLayout.gicDistributor, "distributor"),
                   (Self.v3Redistributors, ArmLinuxLayout.gicRedistributors, "redistributors")]
        case .v2: [(Self.v2Distributor, ArmLinuxLayout.gicDistributor, "distributor"),
                   (Self.v2CPUInterface, ArmLinuxLayout.gicCPUInterface, "CPU interface")]
        }
    }
}

extension ArmGIC.Layout {
    /// The `reg` of its device-tree node: (base, size) of each frame.
    var registers: [(UInt64, UInt64)] {
        switch version {
        case .v3: [(ArmLinuxLayout.gicDistributor, ArmGIC.v3DistributorSize),
                   (ArmLinuxLayout.gicRedistributors, ArmGIC.v3RedistributorSize * UInt64(vcpus))]
        case .v2: [(ArmLinuxLayout.gicDistributor, ArmGIC.v2DistributorSize),
                   (ArmLinuxLayout.gicCPUInterface, ArmGIC.v2CPUInterfaceSize)]
        }
    }

    /// The node's `compatible`.
    var compatible: String { version == .v3 ? "arm,gic-v3" : "arm,cortex-a15-gic" }
}

/// An interrupt line as KVM_IRQ_LINE names it on arm64: type << 24 | vCPU << 16 | number
/// (arch/arm64/include/uapi/asm/kvm.h, KVM_ARM_IRQ_*).
enum ArmIRQ {
    /// Shared peripheral interrupt `spi` (INTID 32 + spi), KVM_ARM_IRQ_TYPE_SPI = 1.
    static func spi(_ spi: UInt32) -> UInt32 { 1 << 24 | (32 + spi) }
}

/// The vCPUs' PMUv3 (Documentation/virt/kvm/devices/vcpu.rst, "GROUP: KVM_ARM_VCPU_PMU_V3_CTRL"):
/// its overflow interrupt on PPI 7 (INTID 23, as on QEMU's virt) and its initialization, after
/// the vGIC's; described in the device tree as "arm,armv8-pmuv3".
enum ArmPMU {
    static let group: UInt32 = 0          // KVM_ARM_VCPU_PMU_V3_CTRL
    static let irqAttribute: UInt64 = 0  // KVM_ARM_VCPU_PMU_V3_IRQ
    static let initAttribute: UInt64 = 1 // KVM_ARM_VCPU_PMU_V3_INIT
    static let ppi: UInt32 = 7

    /// Sets up every vCPU's PMU if KVM_ARM_VCPU_INIT gave them one; whether it did.
    static func setUp(_ vcpus: [VCPU]) throws(KVMError) -> Bool {
        guard let first = vcpus.first, first.hasAttribute(group: group, attribute: initAttribute) else { return false }
        for v in vcpus {
            try v.setAttribute(group: group, attribute: irqAttribute, value: Int32(16 + ppi), what: "PMU interrupt PPI \(ppi)")
            try v.setAttribute(group: group, attribute: initAttribute, value: nil, what: "PMU init")
        }
        return true
    }
}
