// AArch64 stage 2 translation, VMSAv8-64 with the 4 KiB granule (Arm ARM DDI 0487,
// D8.3 "Translation table descriptor formats", D8.5 "Memory attributes" stage 2 fields,
// D13.2.x VTCR_EL2 / VTTBR_EL2 / ESR_EL2 / HPFAR_EL2).

/// One stage 2 descriptor (Arm ARM D8.3.1, D8.3.2 stage 2 block and page descriptors).
@frozen public struct Stage2Descriptor: RawRepresentable, Hashable, Sendable {
    /// The descriptor's 64 bits.
    public var rawValue: UInt64
    /// A descriptor from its bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Bit 0: the descriptor is valid.
    public static let valid: UInt64 = 1 << 0
    /// Bit 1: table (levels 0-2) / page (level 3); 0 = block.
    public static let tableOrPage: UInt64 = 1 << 1
    /// MemAttr[3:0], bits 5:2.
    public static let memAttrShift: UInt64 = 2
    /// S2AP[0], bit 6: reads allowed.
    public static let s2apRead: UInt64 = 1 << 6
    /// S2AP[1], bit 7: writes allowed.
    public static let s2apWrite: UInt64 = 1 << 7
    /// SH[1:0], bits 9:8 (0b11: inner shareable).
    public static let shShift: UInt64 = 8
    /// AF, bit 10.
    public static let accessFlag: UInt64 = 1 << 10
    /// XN[1], bit 54: no instruction fetch (XN[0], bit 53, needs FEAT_XNX).
    public static let executeNever: UInt64 = 1 << 54
    /// OA bits 47:12.
    public static let addressMask: UInt64 = 0x0000_ffff_ffff_f000

    /// MemAttr[3:0] of a block or page descriptor.
    @inlinable public var memAttr: UInt8 { UInt8((rawValue >> Self.memAttrShift) & 0xf) }
}

/// MemAttr[3:0] values for stage 2 with HCR_EL2.FWB = 0 (Arm ARM D8.5.5): bits 3:2 the
/// outer attribute (0b00 Device, 0b01 Non-cacheable, 0b10 Write-Through, 0b11 Write-Back),
/// bits 1:0 the inner attribute for Normal, or the Device type (0b00 nGnRnE, 0b01 nGnRE,
/// 0b10 nGRE, 0b11 GRE). A configurable table like MAIR for stage 1.
///
/// The default device type is Device-nGnRE (0b0001), as Linux KVM maps stage 2 device
/// memory (`KVM_PGTABLE_PROT_DEVICE` → `MT_S2_DEVICE_nGnRE`): early write acknowledgement is
/// allowed, which the guest's own stage 1 attributes may still forbid (the stricter of
/// the two stages wins, D8.5.6). Pass `device: 0b0000` for Device-nGnRnE.
public struct Stage2Attributes: Sendable, Equatable {
    /// MemAttr for normal memory (default 0b1111: Normal, inner and outer Write-Back).
    public var normal: UInt8
    /// MemAttr for `.uncached` memory (default 0b0101: Normal, inner and outer Non-cacheable).
    public var normalNonCacheable: UInt8
    /// MemAttr for `.device` memory (default 0b0001: Device-nGnRE).
    public var device: UInt8
    /// The attribute table; each value keeps its low 4 bits.
    public init(normal: UInt8 = 0b1111, normalNonCacheable: UInt8 = 0b0101, device: UInt8 = 0b0001) {
        self.normal = normal & 0xf
        self.normalNonCacheable = normalNonCacheable & 0xf
        self.device = device & 0xf
    }
}

/// AArch64 stage 2 with a 4 KiB granule, 3 levels (start at level 1, IPA of 32…39 bits) or
/// 4 levels (start at level 0, IPA of 40…48 bits), one 4 KiB root table. The IPA width
/// must not exceed the CPU's physical address range (ID_AA64MMFR0_EL1.PARange), or stage 2
/// faults (e.g. Cortex-A57: 44 bits; RK3568/RK3588: 40 bits).
///
/// The Rust crate's `arm-el2` feature picked which TLBI forms to emit; here the library
/// always asks for the stage 2 forms (`TLBInvalidation.stage2IPA`) and the HAL runs them.
public struct Stage2: NestedPagingFormat {
    /// 3 (start at level 1) or 4 (start at level 0).
    public let levels: Int
    /// IPA width in bits: VTCR_EL2.T0SZ = 64 − ipaBits.
    public let ipaBits: Int
    /// The MemAttr values for normal, non-cacheable and device memory.
    public var attributes: Stage2Attributes
    /// The VMID that `vttbr(root:)` and the TLB invalidations carry.
    public var vmid: UInt16

    /// `levels` must be 3 or 4; `ipaBits` (default 39 or 48) must fit the start level
    /// (Arm ARM D8.2.5: 4 KiB granule, one root table).
    public init(levels: Int = 3, ipaBits: Int? = nil, attributes: Stage2Attributes = Stage2Attributes(),
                vmid: UInt16 = 1) throws(AddrSpaceError)
    {
        guard levels == 3 || levels == 4 else { throw .unsupportedLevels(levels) }
        let bits = ipaBits ?? (levels == 3 ? 39 : 48)
        guard levels == 3 ? (32...39).contains(bits) : (40...48).contains(bits) else {
            throw .unsupportedIPABits(bits, levels: levels)
        }
        self.levels = levels
        self.ipaBits = bits
        self.attributes = attributes
        self.vmid = vmid
    }

    /// 512: one 4 KiB root table (no concatenated roots).
    public var rootEntries: Int { 512 }
    /// 1 GiB (level 1) and 2 MiB (level 2) blocks are both allowed.
    public func allowsHugeLeaf(_ size: PageSize) -> Bool { true }  // level 1 and level 2 blocks
    /// Bit 0 (valid).
    @inlinable public var presentMask: UInt64 { Stage2Descriptor.valid }
    // Above level 3, bits 1:0 = 0b11 is a table descriptor, 0b01 a block.
    /// Bit 1: above level 3, set in a table descriptor and clear in a block.
    @inlinable public var tableMask: UInt64 { Stage2Descriptor.tableOrPage }
    /// Bit 1 set: a table descriptor.
    @inlinable public var tableBits: UInt64 { Stage2Descriptor.tableOrPage }
    /// A table descriptor (bits 1:0 = 0b11) for `table`.
    @inlinable public func tableEntry(_ table: HostPhysAddr) -> UInt64 {
        encodeAddress(table) | Stage2Descriptor.valid | Stage2Descriptor.tableOrPage
    }
    /// A page (bits 1:0 = 0b11) or block (0b01) descriptor with AF set, inner shareable, MemAttr from `attributes`, S2AP from `.read`/`.write`, XN without `.execute`.
    @inline(__always) @inlinable public func leafEntry(_ pa: HostPhysAddr, flags: MappingFlags, size: PageSize) -> UInt64 {
        var e = encodeAddress(pa) | Stage2Descriptor.valid | Stage2Descriptor.accessFlag
        if size == .size4K { e |= Stage2Descriptor.tableOrPage }
        let attr = flags.contains(.device) ? attributes.device
            : flags.contains(.uncached) ? attributes.normalNonCacheable : attributes.normal
        e |= UInt64(attr) << Stage2Descriptor.memAttrShift
        e |= 0b11 << Stage2Descriptor.shShift
        if flags.contains(.read) { e |= Stage2Descriptor.s2apRead }
        if flags.contains(.write) { e |= Stage2Descriptor.s2apWrite }
        if !flags.contains(.execute) { e |= Stage2Descriptor.executeNever }
        return e
    }
    /// Bits 47:12 of the descriptor.
    @inlinable public func address(_ raw: UInt64) -> HostPhysAddr { HostPhysAddr(raw & Stage2Descriptor.addressMask) }
    /// `pa` in bits 47:12.
    @inlinable public func encodeAddress(_ pa: HostPhysAddr) -> UInt64 { pa.raw & Stage2Descriptor.addressMask }
    /// `.read`/`.write` from S2AP, `.execute` unless XN, `.device` for any Device MemAttr, `.uncached` for the table's non-cacheable value.
    @inlinable public func leafFlags(_ raw: UInt64) -> MappingFlags {
        var f: MappingFlags = []
        if raw & Stage2Descriptor.s2apRead != 0 { f.insert(.read) }
        if raw & Stage2Descriptor.s2apWrite != 0 { f.insert(.write) }
        if raw & Stage2Descriptor.executeNever == 0 { f.insert(.execute) }
        let attr = Stage2Descriptor(rawValue: raw).memAttr
        if attr >> 2 == 0 { f.insert(.device) }           // outer Device: any Device type
        else if attr == attributes.normalNonCacheable { f.insert(.uncached) }
        return f
    }
    /// `TLBI IPAS2E1IS` for one IPA (operand IPA >> 12), or every stage 2 entry of the VMID.
    public func invalidation(for gpa: GuestPhysAddr?, root: HostPhysAddr) -> TLBInvalidation {
        guard let gpa else { return .stage2All(vmid: vmid) }
        return .stage2IPA(operand: (gpa.raw >> 12) & 0xf_ffff_ffff, vmid: vmid)
    }

    /// 2^`ipaBits`.
    public var guestAddressLimit: UInt64 { 1 << UInt64(ipaBits) }

    /// VTCR_EL2 (Arm ARM D13.2.151): T0SZ[5:0] = 64 − IPA bits; SL0[7:6] start level
    /// (4 KiB granule: 1 → level 1, 2 → level 0); IRGN0[9:8] = ORGN0[11:10] = 0b01
    /// (write-back write-allocate walks); SH0[13:12] = 0b11; TG0[15:14] = 0b00 (4 KiB);
    /// PS[18:16] physical address size (`paRangeBits`: 32, 36, 40, 42, 44, 48);
    /// bit 31 RES1.
    public func vtcr(paRangeBits: Int = 40) -> UInt64 {
        let ps: UInt64 = switch paRangeBits {
        case ...32: 0
        case ...36: 1
        case ...40: 2
        case ...42: 3
        case ...44: 4
        default: 5
        }
        let t0sz = UInt64(64 - ipaBits)
        let sl0: UInt64 = levels == 3 ? 1 : 2
        return t0sz | sl0 << 6 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b00 << 14 | ps << 16 | 1 << 31
    }
    /// VTTBR_EL2 (D13.2.153): BADDR = root, VMID in bits 63:48 (8-bit VMIDs use 55:48).
    public func vttbr(root: HostPhysAddr) -> UInt64 {
        (root.raw & Stage2Descriptor.addressMask) | UInt64(vmid) << 48
    }
}

/// A stage 2 abort taken to EL2 (Arm ARM D13.2.37 ESR_EL2, D13.2.56 HPFAR_EL2).
public struct Stage2Abort: Sendable, Equatable {
    /// ESR_EL2: the exception class and the data or instruction abort's ISS.
    public var esr: UInt64
    /// HPFAR_EL2: FIPA, bits 43:4, holds bits 51:12 of the faulting IPA.
    public var hpfar: UInt64
    /// FAR_EL2: the faulting virtual address (its low 12 bits complete the IPA).
    public var far: UInt64
    /// The abort from the three EL2 registers.
    public init(esr: UInt64, hpfar: UInt64, far: UInt64) {
        self.esr = esr
        self.hpfar = hpfar
        self.far = far
    }

    /// Exception class ESR_EL2[31:26]: 0x20 instruction abort from a lower EL, 0x24 data abort from a lower EL.
    public var exceptionClass: UInt64 { (esr >> 26) & 0x3f }
    /// DFSC/IFSC, ISS[5:0].
    public var statusCode: UInt64 { esr & 0x3f }
    /// Level of the walk that faulted (from xFSC[1:0]).
    public var level: Int { Int(esr & 3) }
    /// FnV, ISS bit 10 (data and instruction aborts): FAR_EL2 is not valid.
    public var farNotValid: Bool { esr & (1 << 10) != 0 }
    /// IPA: HPFAR_EL2.FIPA (bits 43:4) holds IPA[51:12]; the page offset comes from FAR_EL2,
    /// unless FnV says FAR_EL2 is not valid: then the IPA is the page's start (HPFAR_EL2
    /// stays valid for stage 2 translation, access-flag and permission faults).
    public var ipa: GuestPhysAddr {
        GuestPhysAddr(((hpfar >> 4) & 0xff_ffff_ffff) << 12 | (farNotValid ? 0 : far & 0xfff))
    }

    /// The abort as a nested fault, or `nil` if ESR_EL2 is not an abort from a lower EL.
    /// WnR is ISS bit 6 (data aborts); xFSC 0b0001LL translation, 0b0010LL access flag,
    /// 0b0011LL permission. Every other status code — address size (0b0000LL), synchronous
    /// external abort (0b010000, 0b0101LL on a walk), parity/ECC (0b011000, 0b0111LL),
    /// alignment (0b100001), TLB conflict (0b110000), unsupported atomic (0b110001) — is
    /// `.unrecoverable`: a missing page is not the cause, and `handlePageFault` refuses it.
    public var fault: NestedPageFault? {
        let access: AccessKind
        switch exceptionClass {
        case 0x20: access = .execute
        case 0x24: access = esr & (1 << 6) != 0 ? .write : .read
        default: return nil
        }
        let kind: NestedFaultKind = switch statusCode >> 2 {
        case 0b0001: .translation
        case 0b0010: .accessFlag
        case 0b0011: .permission
        default: .unrecoverable
        }
        return NestedPageFault(gpa: ipa, access: access, kind: kind)
    }
}
