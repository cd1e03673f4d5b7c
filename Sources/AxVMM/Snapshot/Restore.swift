import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// 16 bytes as 32 hexadecimal digits (a snapshot's identity in messages).
func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// What is done with a restored guest's loader (`RestoreSource.withLoader`): run it, or
/// only look at it (`Snapshots.inspect`).
protocol RestoredLoaderBody {
    associatedtype R
    func run<L: GuestLoader>(_ loader: L, _ source: RestoreSource) throws(VMMError) -> R
}

/// A snapshot read and checked for a restore, before any VM exists.
struct RestoreSource: @unchecked Sendable {  // immutable; `pages` goes to the HAL, under its lock
    let directory: String
    let state: SnapshotState
    let pages: SnapshotPages
    /// The snapshot's identity and its state's CRC-32: what a diff of the restored VM pins.
    var pin: (id: [UInt8], crc: UInt32) { (state.id, stateCRC) }
    let stateCRC: UInt32

    /// Reads `directory`'s state file — and a diff snapshot's parents' — and opens the
    /// memory files, refusing a snapshot this host cannot restore (another architecture, KVM
    /// module or build's state layout, a damaged or truncated file, a broken chain), naming
    /// the file and the field.
    /// `checkHost`: refuse a snapshot of another KVM module (off only for `Snapshots.inspect`,
    /// which builds no VM).
    init<P: Platform>(directory: String, platform: P, checkHost: Bool = true) throws(VMMError) {
        var chain: [(directory: String, state: SnapshotState)] = []
        var next = directory
        var pin: (id: [UInt8], crc: UInt32)?
        var firstCRC: UInt32?
        while true {
            let path = next + "/" + SnapshotState.stateFile
            let (state, crc) = try Self.readState(next, platform: platform, checkHost: checkHost)
            if let child = chain.last {
                // The parent must be the very snapshot the diff was taken over.
                let childPath = child.directory + "/" + SnapshotState.stateFile
                if let pin, pin.id != state.id || pin.crc != crc {
                    throw .snapshot(path: path, field: "snapshot id",
                                    reason: "not the parent \(childPath) was taken over (id \(hex(state.id)), state CRC-32 0x\(String(crc, radix: 16)); the diff pins id \(hex(pin.id)), CRC-32 0x\(String(pin.crc, radix: 16))): it was replaced since, and the diff cannot be restored over it")
                }
                let first = chain[0].state
                let same = first.regions.count == state.regions.count && zip(first.regions, state.regions).allSatisfy {
                    $0.range == $1.range && $0.readOnly == $1.readOnly && $0.fileOffset == $1.fileOffset
                }
                guard same && first.memorySize == state.memorySize && first.kind == state.kind else {
                    throw .snapshot(path: path, field: "regions", reason: "the parent's memory layout differs from its diff's")
                }
            }
            chain.append((next, state))
            firstCRC = firstCRC ?? crc
            if state.parent.isEmpty { break }
            guard chain.count < Self.maxChain else {
                throw .snapshot(path: directory + "/" + SnapshotState.stateFile, field: "parent",
                                reason: "more than \(Self.maxChain) diff snapshots in a row (a loop?)")
            }
            pin = (state.parentID, state.parentCRC)
            next = state.parent
        }
        self.directory = directory
        self.chain = chain.map { $0.directory }
        state = chain[0].state
        stateCRC = firstCRC ?? 0
        pages = try SnapshotPages(chain: chain)
    }
    static let maxChain = 16
    /// The snapshot's directory and its ancestors' (a diff's parents), newest first.
    let chain: [String]

    /// One state file, checked against this host; and its CRC-32 (what a diff pins).
    private static func readState<P: Platform>(_ directory: String, platform: P, checkHost: Bool) throws(VMMError) -> (SnapshotState, UInt32) {
        let path = directory + "/" + SnapshotState.stateFile
        let (state, crc) = try SnapshotState.read(path)
        func bad(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
        guard state.arch == platform.arch.rawValue else {
            throw bad("arch", "\(state.arch); this host runs \(platform.arch.rawValue) guests")
        }
        let flavour = checkHost ? KVMFlavour.detect().module.rawValue : state.flavour
        guard state.flavour == flavour else { throw bad("kvm flavour", "taken on \(state.flavour); this host's KVM is \(flavour)") }
        if let fixed = platform.fixedStateSizes, state.vcpuStateSize != UInt32(fixed.vcpu) || state.vmStateSize != UInt32(fixed.vm) {
            throw bad("vcpu state size", "\(state.vcpuStateSize) and \(state.vmStateSize) bytes; this axvm's are \(fixed.vcpu) and \(fixed.vm) (another build)")
        }
        return (state, crc)
    }

    /// Makes the loader of the guest the snapshot holds (its configuration from the
    /// snapshot, the run's settings from `config`), checks that it builds the machine the
    /// snapshot describes, and hands it to `body` — all before any VM exists.
    func withLoader<P: Platform, B: RestoredLoaderBody>(platform: P, config c: RestoreConfig, t0: UInt64, _ body: B) throws(VMMError) -> B.R {
        let path = directory + "/" + SnapshotState.stateFile
        switch state.kind {
        case "memtest":
            let loader = try MemtestLoader.restoring(platform: platform, bytes: state.loader, path: path, base: c.memtestConfig)
            try check(memorySize: loader.settings.memorySize, vcpus: loader.settings.vcpus, ram: loader.ram)
            return try body.run(loader, self)
        case "linux":
            return try platform.withRestoredLinux(self, config: c.linuxConfig, t0: t0, body)
        default:
            throw .snapshot(path: path, field: "guest kind", reason: "\(state.kind): this axvm restores memtest and Linux guests")
        }
    }

    /// The state file's path, for errors.
    var statePath: String { directory + "/" + SnapshotState.stateFile }
    /// The saved RAM areas (a restored Linux loader's).
    var savedRAM: [GuestPhysRange] { state.regions.filter { !$0.readOnly }.map { $0.range } }

    /// Checks a restored Linux guest's loader (`Platform.withRestoredLinux`) against the
    /// snapshot's machine, then hands it to `body`.
    func runLinux<L: GuestLoader, B: RestoredLoaderBody>(_ loader: L, _ body: B) throws(VMMError) -> B.R {
        try check(memorySize: state.memorySize, vcpus: loader.settings.vcpus, ram: loader.platform.ramRanges(size: state.memorySize))
        return try body.run(loader, self)
    }

    /// The loader made from the snapshot must build the machine the snapshot describes: its
    /// memory size, its vCPUs and its RAM (the areas were checked against the layout of that
    /// size in `SnapshotState.checkMachine`). Before any VM exists.
    func check(memorySize: UInt64, vcpus: Int, ram: [GuestPhysRange]) throws(VMMError) {
        let path = directory + "/" + SnapshotState.stateFile
        guard memorySize == state.memorySize else {
            throw .snapshot(path: path, field: "loader memory size", reason: "\(memorySize) bytes; the snapshot's memory is \(state.memorySize)")
        }
        guard vcpus == state.vcpus.count else {
            throw .snapshot(path: path, field: "loader vcpus", reason: "\(vcpus); the snapshot saved \(state.vcpus.count)")
        }
        let saved = state.regions.filter { !$0.readOnly }.map { $0.range }
        guard ram == saved else {
            throw .snapshot(path: path, field: "regions", reason: "RAM \(saved); the guest's loader lays out \(ram)")
        }
    }

    /// Refuses to write a snapshot into `target` if it is this snapshot's directory or one
    /// of its ancestors (same device and inode, links followed): the new snapshot would
    /// replace one it depends on.
    func checkSnapshotTarget(_ target: String) throws(VMMError) {
        var t = stat()
        guard stat(target, &t) == 0 else { return }  // made by the snapshot: no ancestor
        for (i, dir) in chain.enumerated() {
            var d = stat()
            if stat(dir, &d) == 0 && d.st_dev == t.st_dev && d.st_ino == t.st_ino {
                let what = i == 0 ? "the snapshot being restored" : "an ancestor of the snapshot being restored (\(i) up the chain from \(directory))"
                throw .badValue(what: "snapshot directory", value: target,
                                reason: "is \(dir), \(what): writing there would replace a snapshot this run reads; choose another directory")
            }
        }
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
        try loader.restored(memory: memory, vm: vm, vcpus: vcpus)
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
        let path = r.directory + "/" + SnapshotState.stateFile
        for (i, (v, saved)) in zip(vcpus, r.state.vcpus).enumerated() where saved.ended == 0 {
            do { try platform.restoreVCPU(v, saved.state, path: path) } catch {
                if case let .snapshot(p, field, reason) = error { throw .snapshot(path: p, field: "vcpu \(i) \(field)", reason: reason) }
                throw error
            }
        }
    }

    /// The snapshot's writer (`SnapshotTaker.save`), with every vCPU paused: VM state,
    /// loader, guest memory and the state file, each flushed to disk, in a new directory
    /// that then replaces `directory` as a whole (`SnapshotDirectory`): a write that fails
    /// leaves the old snapshot as it was.
    func writeSnapshot(_ directory: String, states: [[UInt8]], ended: [VCPUOutcome?], vm: VirtualMachine,
                       memory: GuestMemory<L.P.Format>) throws(VMMError) -> (pages: Int, memoryBytes: UInt64, diskBytes: UInt64, stateBytes: Int) {
        let target = try SnapshotDirectory(directory)
        let vmState = try platform.saveVM(vm)
        let loaderState = try loader.snapshotBytes()
        // A diff names its parent by absolute path (the restore may run elsewhere) and pins it.
        var parent: (path: String, id: [UInt8], crc: UInt32)?
        if settings.snapshot?.diff == true, let r = restore {
            guard let p = realpath(r.directory, nil) else {
                throw .snapshot(path: r.directory, field: "parent", reason: "realpath: \(errnoString(errno))")
            }
            parent = (cString(p), r.pin.id, r.pin.crc)
            free(p)
        }
        return try target.replace { temp throws(VMMError) in
            let memPath = temp + "/" + SnapshotState.memoryFile
            let fd = ckvm_open_mode(memPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .snapshot(path: memPath, field: "memory file", reason: "create: \(errnoString(errno))") }
            let regions: [SnapshotState.SavedRegion]
            var mst = stat()
            do throws(VMMError) {
                regions = try memory.writeSnapshot(to: fd, path: memPath, diff: parent != nil)
                guard fsync(fd) == 0 else { throw VMMError.snapshot(path: memPath, field: "memory file", reason: "fsync: \(errnoString(errno))") }
                fstat(fd, &mst)
            } catch {
                close(fd)
                throw error
            }
            guard close(fd) == 0 else { throw .snapshot(path: memPath, field: "memory file", reason: "close: \(errnoString(errno))") }
            // Every block one size: the platform's, or the first saved vCPU's (ONE_REG states).
            let vcpuSize = platform.fixedStateSizes?.vcpu ?? states.first { !$0.isEmpty }?.count ?? 0
            var vcpus: [SnapshotState.SavedVCPU] = []
            for (i, s) in states.enumerated() {
                let e = i < ended.count ? ended[i] : nil
                // A vCPU that ended before the pause has no saved registers: a blank block of the
                // right size, never loaded (it does not run after a restore).
                guard s.isEmpty || s.count == vcpuSize else {
                    throw VMMError.snapshot(path: temp, field: "vcpu \(i) state", reason: "\(s.count) bytes where the first vCPU saved had \(vcpuSize) (KVM listed other registers)")
                }
                let bytes = s.isEmpty ? [UInt8](repeating: 0, count: vcpuSize) : s
                vcpus.append(SnapshotState.SavedVCPU(state: bytes, ended: e))
            }
            var state = SnapshotState(arch: platform.arch.rawValue, flavour: KVMFlavour.current.module.rawValue,
                                      vcpuStateSize: UInt32(vcpuSize), vmStateSize: UInt32(vmState.count),
                                      kind: loader.snapshotKind, loader: loaderState,
                                      memorySize: settings.memorySize, regions: regions, vcpus: vcpus, vm: vmState)
            if let parent {
                state.parent = parent.path
                state.parentID = parent.id
                state.parentCRC = parent.crc
            }
            let bytes = state.encoded()
            let statePath = temp + "/" + SnapshotState.stateFile
            let sfd = ckvm_open_mode(statePath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard sfd >= 0 else { throw .snapshot(path: statePath, field: "state file", reason: "create: \(errnoString(errno))") }
            var failed = bytes.withUnsafeBytes { writeAll(sfd, $0, at: 0) }
            if failed == nil && fsync(sfd) != 0 { failed = errno }
            if close(sfd) != 0 && failed == nil { failed = errno }
            if let e = failed { throw .snapshot(path: statePath, field: "state file", reason: "write: \(errnoString(e))") }
            return (state.populatedPages, state.memoryFileSize, UInt64(mst.st_blocks) * 512, bytes.count)
        }
    }
}
