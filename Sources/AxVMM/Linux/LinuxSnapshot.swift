/// What every platform's Linux loader keeps in a snapshot and reads back: the configuration
/// the report names (first), and the virtio devices (last: `VirtioSet.save`). What lies
/// between is the platform's own devices (x86's firmware kind, UART, i8042, PCI latch; arm64's
/// UART and vGIC).
extension LinuxBootConfig {
    /// Kernel, initrd, command line, init marker, memory size, vCPUs.
    func writeSnapshotFields(_ w: inout ByteWriter) {
        w.string(kernelPath)
        w.string(initrdPath ?? "")
        w.string(cmdline)
        w.string(initMarker)
        w.u64(memorySize)
        w.u64(UInt64(vcpus))
    }

    /// `base` (the restore's own settings: paging, fault-around, timeout, marker, …) with the
    /// fields `writeSnapshotFields` wrote over it, the vCPU count checked.
    static func readSnapshotFields(_ r: inout ByteReader, base: LinuxBootConfig) throws(VMMError) -> LinuxBootConfig {
        var c = base
        c.kernelPath = try r.string("linux kernel")
        let initrd = try r.string("linux initrd")
        c.initrdPath = initrd.isEmpty ? nil : initrd
        c.cmdline = try r.string("linux command line")
        let marker = try r.string("linux init marker")
        if c.initMarker.isEmpty { c.initMarker = marker }
        c.memorySize = try r.u64("linux memory size")
        let vcpus = try r.u64("linux vcpus")
        guard vcpus >= 1 && vcpus <= UInt64(LinuxBootConfig.maxVCPUs) else {
            throw r.error("linux vcpus", "\(vcpus); from 1 to \(LinuxBootConfig.maxVCPUs)")
        }
        c.vcpus = Int(vcpus)
        return c
    }

    /// The virtio devices a snapshot saved (the rest of `r`), made again at `base` with their
    /// saved states; `c` learns which there are. nil: none.
    static func readSnapshotVirtio(_ r: inout ByteReader, config c: inout LinuxBootConfig, base: UInt64, firstGSI: UInt32,
                                   path: String) throws(VMMError) -> VirtioSet? {
        let devices = try VirtioSet.restoring(&r)
        guard r.remaining == 0 else { throw .snapshot(path: path, field: "loader", reason: "\(r.remaining) bytes after the Linux loader's fields") }
        c.disks = devices.disks
        c.rng = devices.rng
        c.balloon = devices.balloon
        guard c.virtioDevices > 0 else { return nil }
        // The balloon's target comes back with its state.
        return try VirtioSet(disks: c.disks, rng: c.rng, balloon: c.balloon ? 0 : nil, base: base, firstGSI: firstGSI,
                             restoredStates: devices.states, restoredFrom: path)
    }
}
