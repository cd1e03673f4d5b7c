import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A snapshot read and checked for a restore, before any VM exists.
struct RestoreSource: @unchecked Sendable {  // immutable; `pages` goes to the HAL, under its lock
    let directory: String
    let state: SnapshotState
    let pages: SnapshotPages

    /// Reads `directory`'s state file — and a diff snapshot's parents' — and opens the
    /// memory files, refusing a snapshot this host cannot restore (another architecture, KVM
    /// module or build's state layout, a damaged or truncated file, a broken chain), naming
    /// the file and the field.
    init<P: Platform>(directory: String, platform: P) throws(VMMError) {
        var chain: [(directory: String, state: SnapshotState)] = []
        var next = directory
        while true {
            let state = try Self.readState(next, platform: platform)
            if let first = chain.first?.state {
                let path = next + "/" + SnapshotState.stateFile
                let same = first.regions.count == state.regions.count && zip(first.regions, state.regions).allSatisfy {
                    $0.range == $1.range && $0.readOnly == $1.readOnly && $0.fileOffset == $1.fileOffset
                }
                guard same && first.memorySize == state.memorySize else {
                    throw .snapshot(path: path, field: "regions", reason: "the parent's memory layout differs from its diff's")
                }
            }
            chain.append((next, state))
            if state.parent.isEmpty { break }
            guard chain.count < Self.maxChain else {
                throw .snapshot(path: directory + "/" + SnapshotState.stateFile, field: "parent",
                                reason: "more than \(Self.maxChain) diff snapshots in a row (a loop?)")
            }
            next = state.parent
        }
        self.directory = directory
        state = chain[0].state
        pages = try SnapshotPages(chain: chain)
    }
    static let maxChain = 16

    /// One state file, checked against this host.
    private static func readState<P: Platform>(_ directory: String, platform: P) throws(VMMError) -> SnapshotState {
        let path = directory + "/" + SnapshotState.stateFile
        let bytes = try readSnapshotFile(path, field: "state file", limit: SnapshotState.stateLimit)
        let state = try SnapshotState.decode(bytes, path: path)
        func bad(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
        guard state.arch == platform.arch.rawValue else {
            throw bad("arch", "\(state.arch); this host runs \(platform.arch.rawValue) guests")
        }
        let flavour = KVMFlavour.detect().module.rawValue
        guard state.flavour == flavour else { throw bad("kvm flavour", "taken on \(state.flavour); this host's KVM is \(flavour)") }
        guard platform.vcpuStateSize > 0 else { throw bad("arch", "snapshots are built for x86_64 guests only so far") }
        guard state.vcpuStateSize == UInt32(platform.vcpuStateSize), state.vmStateSize == UInt32(platform.vmStateSize) else {
            throw bad("vcpu state size", "\(state.vcpuStateSize) and \(state.vmStateSize) bytes; this axvm's are \(platform.vcpuStateSize) and \(platform.vmStateSize) (another build)")
        }
        return state
    }

    /// How each vCPU's loop had ended when the snapshot was taken (nil: it was running).
    var endedVCPUs: [VCPUOutcome?] {
        state.vcpus.map { v in
            switch v.ended {
            case 1: .exited(UInt8(truncatingIfNeeded: v.value))
            case 2: .halted(rip: v.value)
            case 3: .deadHalt(rip: v.value)
            default: nil
            }
        }
    }

    func statistics(pagesCopied: Int) -> RestoreStatistics {
        RestoreStatistics(directory: directory, snapshotPages: pages.pagesHeld, pagesCopied: pagesCopied)
    }
}

/// What a restored run took from its snapshot.
public struct RestoreStatistics: Sendable, Equatable {
    public var directory: String
    /// Pages the snapshot holds (a diff: with its parents), and those copied into the VM
    /// (the rest were never touched after the restore: a lazy restore's saving).
    public var snapshotPages: Int
    public var pagesCopied: Int
}

extension SnapshotState.SavedVCPU {
    init(state: [UInt8], ended: VCPUOutcome?) {
        switch ended {
        case let .exited(code)?: self.init(ended: 1, value: UInt64(code), state: state)
        case let .halted(rip)?: self.init(ended: 2, value: rip, state: state)
        case let .deadHalt(rip)?: self.init(ended: 3, value: rip, state: state)
        default: self.init(ended: 0, value: 0, state: state)
        }
    }
}

extension Runner {
    /// A restore in place of the loader's `load`: the snapshot's areas (lazy ones fill from
    /// the memory file on first touch, populated ones now). Returns the RAM areas.
    func restoreMachine(_ r: RestoreSource, memory: GuestMemory<L.P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) -> [RAMRegion] {
        memory.withSpace { _ in memory.hal.contents = r.pages }
        var ram: [RAMRegion] = []
        for saved in r.state.regions {
            let region: RAMRegion
            do {
                region = try memory.addRAM(at: saved.range.start, size: saved.range.size,
                                           lazy: settings.lazy && !saved.readOnly, readOnly: saved.readOnly,
                                           logDirty: settings.snapshot?.diff == true)
            } catch {
                // A page that failed its checksum while an area was populated.
                if let f = memory.withSpace({ _ in r.pages.failure }) { throw .snapshot(path: r.pages.path, field: "memory", reason: f) }
                throw error
            }
            if !saved.readOnly { ram.append(region) }
        }
        loader.restored(memory: memory)
        return ram
    }

    /// The VM's state, then each vCPU's (the LAPICs after the irqchip), with the pager
    /// running: KVM touches guest memory while it takes some of it.
    func restoreState(_ r: RestoreSource, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        guard vcpus.count == r.state.vcpus.count else {
            throw .snapshot(path: r.directory, field: "vcpus", reason: "\(r.state.vcpus.count) saved, \(vcpus.count) made")
        }
        try platform.restoreVM(vm, r.state.vm)
        // A vCPU whose loop had ended has no saved registers (a blank block) and does not run.
        for (v, saved) in zip(vcpus, r.state.vcpus) where saved.ended == 0 { try platform.restoreVCPU(v, saved.state) }
    }

    /// The snapshot's writer (`SnapshotTaker.save`), with every vCPU paused: VM state,
    /// loader, guest memory into `memory.tmp`, the state into `state.tmp`, then both renamed
    /// (memory first: a state file names only a complete memory file).
    func writeSnapshot(_ directory: String, states: [[UInt8]], ended: [VCPUOutcome?], vm: VirtualMachine,
                       memory: GuestMemory<L.P.Format>) throws(VMMError) -> (pages: Int, memoryBytes: UInt64, diskBytes: UInt64, stateBytes: Int) {
        func bad(_ file: String, _ what: String) -> VMMError {
            .snapshot(path: directory + "/" + file, field: what, reason: errnoString(errno))
        }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw bad("", "mkdir") }
        var st = stat()
        guard stat(directory, &st) == 0, ckvm_is_directory(UInt32(st.st_mode)) != 0 else {
            throw .snapshot(path: directory, field: "directory", reason: "not a directory")
        }
        let vmState = try platform.saveVM(vm)
        // A diff names its parent by absolute path (the restore may run elsewhere).
        var parent: String?
        if settings.snapshot?.diff == true, let r = restore {
            guard let p = realpath(r.directory, nil) else { throw bad("", "realpath of the parent \(r.directory)") }
            parent = String(cString: p)
            free(p)
        }
        let memTemp = directory + "/" + SnapshotState.memoryFile + ".tmp"
        let fd = ckvm_open_mode(memTemp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw bad(SnapshotState.memoryFile + ".tmp", "create") }
        let regions: [SnapshotState.SavedRegion]
        do {
            regions = try memory.writeSnapshot(to: fd, path: memTemp, diff: parent != nil)
        } catch {
            close(fd)
            unlink(memTemp)
            throw error
        }
        var mst = stat()
        fstat(fd, &mst)
        guard close(fd) == 0 else { unlink(memTemp); throw bad(SnapshotState.memoryFile + ".tmp", "close") }
        var vcpus: [SnapshotState.SavedVCPU] = []
        for (i, s) in states.enumerated() {
            let e = i < ended.count ? ended[i] : nil
            // A vCPU that ended before the pause has no saved registers: a blank block of the
            // right size, never loaded (it does not run after a restore).
            let bytes = s.isEmpty ? [UInt8](repeating: 0, count: platform.vcpuStateSize) : s
            vcpus.append(SnapshotState.SavedVCPU(state: bytes, ended: e))
        }
        let state = SnapshotState(arch: platform.arch.rawValue, flavour: KVMFlavour.detect().module.rawValue,
                                  vcpuStateSize: UInt32(platform.vcpuStateSize), vmStateSize: UInt32(platform.vmStateSize),
                                  kind: loader.snapshotKind, loader: loader.snapshotBytes(), parent: parent ?? "",
                                  memorySize: settings.memorySize, regions: regions, vcpus: vcpus, vm: vmState)
        let bytes = state.encoded()
        let stateTemp = directory + "/" + SnapshotState.stateFile + ".tmp"
        let sfd = ckvm_open_mode(stateTemp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard sfd >= 0 else { unlink(memTemp); throw bad(SnapshotState.stateFile + ".tmp", "create") }
        let failed = bytes.withUnsafeBytes { writeAll(sfd, $0, at: 0) }
        if close(sfd) != 0 || failed != nil {
            unlink(memTemp)
            unlink(stateTemp)
            throw .snapshot(path: stateTemp, field: "write", reason: errnoString(failed ?? errno))
        }
        guard rename(memTemp, directory + "/" + SnapshotState.memoryFile) == 0 else { throw bad(SnapshotState.memoryFile, "rename") }
        guard rename(stateTemp, directory + "/" + SnapshotState.stateFile) == 0 else { throw bad(SnapshotState.stateFile, "rename") }
        return (state.populatedPages, state.memoryFileSize, UInt64(mst.st_blocks) * 512, bytes.count)
    }
}
