/// The host services an address space needs: frames, and a way to reach them.
///
/// The Rust crate's `AxMmHal` is a set of static functions; this is an instance protocol
/// so that a test can count frames and make the Nth allocation fail, and so that two
/// address spaces can draw from different pools. Implementations are classes because the
/// address space and its page table share one HAL.
///
/// Every frame the library hands to a guest is zeroed through `zeroFrame(_:)` (default:
/// `physToVirt` + store zeros); a HAL whose frames are known to be zero may do less there.
/// Table frames the walker zeroes itself: an empty table must be all zeros, whatever the HAL.
public protocol NestedMemoryHAL: AnyObject {
    /// One 4 KiB frame, or `nil` when out of memory.
    func allocFrame() -> HostPhysAddr?
    /// `count` physically contiguous frames aligned to `alignment` bytes (used for the
    /// 16 KiB root of Sv39x4/Sv48x4 and concatenated Stage 2 roots).
    func allocContiguousFrames(count: Int, alignment: UInt64) -> HostPhysAddr?
    /// A frame for guest page `gpa` of `area` (placement hint, e.g. so that one area is
    /// one contiguous host span). Default: `allocFrame()`.
    func allocFrame(for gpa: GuestPhysAddr, in area: GuestPhysRange) -> HostPhysAddr?
    /// Returns a frame from `allocFrame()` or `allocFrame(for:in:)`; the library never uses it again.
    func deallocFrame(_ frame: HostPhysAddr)
    /// Frees what `allocContiguousFrames` returned. Default: one `deallocFrame` per frame.
    func deallocContiguousFrames(_ base: HostPhysAddr, count: Int)
    /// Where the hypervisor reaches host-physical `pa` (tables are written, frames zeroed there).
    func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr
    /// The inverse of `physToVirt(_:)`.
    func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr
    /// Fills a freshly allocated guest frame with zeros. Default: 4 KiB of stores through
    /// `physToVirt`. A HAL whose frames are known to be zero (fresh memfd pages) may skip it.
    func zeroFrame(_ frame: HostPhysAddr)
    /// Called whenever the nested TLB must drop translations the library changed
    /// (see `TLBInvalidation` for when). Default: nothing (a userspace VMM on KVM: the
    /// kernel keeps its own tables).
    func invalidateTLB(_ op: TLBInvalidation)
}

extension NestedMemoryHAL {
    /// Default: `allocFrame()`, no placement.
    public func allocFrame(for gpa: GuestPhysAddr, in area: GuestPhysRange) -> HostPhysAddr? { allocFrame() }
    /// Default: one frame when one 4 KiB-aligned frame is asked for; `nil` otherwise.
    public func allocContiguousFrames(count: Int, alignment: UInt64) -> HostPhysAddr? {
        count == 1 && alignment <= PageSize.size4K.bytes ? allocFrame() : nil
    }
    /// Default: `deallocFrame(_:)` for each of the `count` frames.
    public func deallocContiguousFrames(_ base: HostPhysAddr, count: Int) {
        for i in 0..<count { deallocFrame(base + UInt64(i) * PageSize.size4K.bytes) }
    }
    /// Default: 512 eight-byte stores through `physToVirt(_:)`.
    public func zeroFrame(_ frame: HostPhysAddr) {
        // Sound: physToVirt returns the hypervisor's mapping of a whole 4 KiB frame it owns.
        guard let p = physToVirt(frame).pointer else { return }
        p.initializeMemory(as: UInt64.self, repeating: 0, count: 512)
    }
    /// Default: nothing (right for a userspace VMM: the host kernel keeps its own tables).
    public func invalidateTLB(_ op: TLBInvalidation) {}
}

/// A nested-TLB invalidation the hardware needs after the library changed an entry.
///
/// When the library asks for one:
/// - a present entry was removed or changed (unmap, protect, splitting a huge page — the
///   split is done break-before-make: entry cleared, invalidated, then the table written);
/// - on RISC-V also after an invalid entry became valid: the privileged spec lets a hart
///   keep an invalid G-stage translation cached until `HFENCE.GVMA` (without Svvptc), so
///   a lazily populated page could fault again. EPT (SDM 29.4.3.3: an EPT violation
///   invalidates the faulting GPA's cached translations) and Stage 2 (Arm ARM D8.13: TLBs
///   never cache translation faults) do not need it there.
public enum TLBInvalidation: Equatable, Sendable {
    /// x86 Intel: `INVEPT` type 1 (single-context) with this EPTP (SDM vol. 3C §30.3).
    /// EPT has no by-address invalidation, so every change flushes the context.
    case inveptSingleContext(eptp: UInt64)
    /// x86 AMD: flush this guest's ASID (VMCB TLB_CONTROL = 3, APM vol. 2 §15.16.1).
    case nptFlushGuest(nCR3: UInt64)
    /// AArch64: `TLBI IPAS2E1IS, Xt` with Xt = IPA >> 12, then `DSB ISH; TLBI VMALLE1IS;
    /// DSB ISH; ISB` — stage-1+2 combined entries are not tagged by IPA (Arm ARM D8.13.4).
    case stage2IPA(operand: UInt64, vmid: UInt16)
    /// AArch64: `TLBI VMALLS12E1IS; DSB ISH; ISB` for the VMID in VTTBR_EL2.
    case stage2All(vmid: UInt16)
    /// RISC-V: `HFENCE.GVMA rs1, rs2` with rs1 = GPA >> 2 (the spec's encoding) and
    /// rs2 = VMID.
    case gstageGPA(operand: UInt64, vmid: UInt16)
    /// RISC-V: `HFENCE.GVMA x0, rs2` (every GPA of this VMID).
    case gstageAll(vmid: UInt16)
}
