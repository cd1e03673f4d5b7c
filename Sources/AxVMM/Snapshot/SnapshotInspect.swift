import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// What a restore of a snapshot would build, found the way `axvm restore` finds it but
/// without a VM: the state files read and checked (the chain followed), the memory files
/// opened, the guest's loader made from the snapshot and checked against it, and the held
/// pages read and checked against their checksums. The oracle of the `Snapshot` fuzz target.
public struct SnapshotInspection: Sendable, Equatable {
    public struct Area: Sendable, Equatable {
        public var range: GuestPhysRange
        public var readOnly: Bool
    }
    public var kind: String
    public var arch: GuestArch
    public var memorySize: UInt64
    /// The memory areas, in order, and the RAM areas the loader lays out.
    public var areas: [Area]
    public var loaderRAM: [GuestPhysRange]
    public var vcpus: Int
    /// vCPUs that run after the restore (the others had ended).
    public var running: Int
    /// Pages the snapshot (with its parents) holds, and those read and checked.
    public var pagesHeld: Int
    public var pagesChecked: Int
    /// The first held page that could not be read whole or failed its checksum (a lazy
    /// restore stops the guest there).
    public var damagedPage: String?
}

extension Snapshots {
    /// Inspects the snapshot in `directory` as a restore would prepare it (`SnapshotInspection`),
    /// checking at most `pageLimit` held pages. Throws what the restore would refuse it for;
    /// the KVM module it was taken on is not compared with this host's.
    public static func inspect(directory: String, pageLimit: Int = .max) throws(VMMError) -> SnapshotInspection {
        struct Job: Platforms.Job {
            let directory: String
            let pageLimit: Int
            func run<P: Platform>(_ platform: P) throws(VMMError) -> SnapshotInspection {
                let source = try RestoreSource(directory: directory, platform: platform, checkHost: false)
                var config = RestoreConfig(directory: directory)
                config.serialToStdout = false
                return try source.withLoader(platform: platform, config: config, t0: nowNanos(), Look(pageLimit: pageLimit))
            }
        }
        return try Platforms.withHost(Job(directory: directory, pageLimit: pageLimit))
    }

    /// Reads the held pages through the restore's own path (`SnapshotPages.fill`, into a
    /// memfd laid out as the guest's areas end to end).
    private struct Look: RestoredLoaderBody {
        let pageLimit: Int
        func run<L: GuestLoader>(_ loader: L, _ source: RestoreSource) throws(VMMError) -> SnapshotInspection {
            let s = source.state
            var out = SnapshotInspection(kind: s.kind, arch: loader.platform.arch, memorySize: s.memorySize,
                                         areas: s.regions.map { .init(range: $0.range, readOnly: $0.readOnly) },
                                         loaderRAM: loader.ram, vcpus: s.vcpus.count, running: s.vcpus.filter { $0.ended == 0 }.count,
                                         pagesHeld: source.pages.pagesHeld, pagesChecked: 0, damagedPage: nil)
            let fd = ckvm_memfd_create("axvm-inspect", 1 /* MFD_CLOEXEC */)
            guard fd >= 0 else { throw .host("memfd_create: \(errnoString(errno))") }
            defer { close(fd) }
            outer: for r in s.regions {
                for (page, _) in source.pages.pending(in: r.range) {
                    guard out.pagesChecked < pageLimit else { break outer }
                    out.pagesChecked += 1
                    if !source.pages.fill(r.range.start + UInt64(page) * 4096, memfd: fd, at: r.fileOffset + UInt64(page) * 4096) {
                        out.damagedPage = source.pages.failure
                        break outer
                    }
                }
            }
            return out
        }
    }
}
