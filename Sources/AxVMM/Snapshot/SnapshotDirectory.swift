import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// Where a snapshot is written (`--snapshot DIR`), replaced as a whole.
///
/// The new snapshot is written into a directory of its own beside DIR
/// (`.NAME.axvm-PID-N`), flushed to disk, and swapped with DIR in one step
/// (`renameat2(RENAME_EXCHANGE)`; a plain rename when DIR does not exist yet); the old
/// snapshot, now under the temporary name, is then deleted. A write that fails or is
/// interrupted before the swap leaves DIR as it was, and the temporary directory is removed
/// on every failure the process lives through.
///
/// DIR must be absent, or a directory holding nothing but a snapshot's files: a directory
/// with anything else in it (`--snapshot ~`) is refused before the run, so that replacing
/// it never deletes a file that is not a snapshot's. A symbolic link to a directory is
/// followed: the directory it names is replaced, the link stays.
struct SnapshotDirectory {
    /// The directory as given (messages name it).
    let given: String
    /// The path swapped: `given`, or where it links to.
    let path: String
    /// The directory that holds it.
    let parent: String

    /// The files a snapshot directory may hold (earlier axvm versions' temporary names too).
    static let snapshotFiles: Set<String> = [SnapshotState.stateFile, SnapshotState.memoryFile, "state.tmp", "memory.tmp"]

    /// Checks `directory` as a place for a new snapshot (before the run, and again when it
    /// is written): absent under an existing directory, or a directory of snapshot files.
    init(_ directory: String) throws(VMMError) {
        func bad(_ reason: String) -> VMMError { .snapshot(path: directory, field: "snapshot directory", reason: reason) }
        given = directory
        var st = stat()
        if lstat(directory, &st) == 0 && ckvm_is_symlink(UInt32(st.st_mode)) != 0 {
            guard let p = realpath(directory, nil) else { throw bad("a link to nowhere: \(errnoString(errno))") }
            path = cString(p)
            free(p)
        } else {
            // Without a trailing slash: the swap renames the directory entry itself.
            var p = directory
            while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
            path = p
        }
        parent = Self.parentDirectory(of: path)
        if stat(path, &st) == 0 {
            guard ckvm_is_directory(UInt32(st.st_mode)) != 0 else { throw bad("exists and is not a directory") }
            guard let names = Self.entries(path) else { throw bad("cannot be listed: \(errnoString(errno))") }
            let foreign = names.filter { !Self.snapshotFiles.contains($0) }.sorted()
            guard foreign.isEmpty else {
                let shown = foreign.prefix(3).joined(separator: ", ") + (foreign.count > 3 ? ", …" : "")
                throw bad("holds files that are not a snapshot's (\(shown)): a snapshot replaces its directory as a whole; name a new or empty directory, or an earlier snapshot")
            }
        } else {
            guard errno == ENOENT else { throw bad(errnoString(errno)) }
            guard stat(parent, &st) == 0, ckvm_is_directory(UInt32(st.st_mode)) != 0 else {
                throw bad("its parent \(parent) is not a directory")
            }
        }
        guard access(parent, W_OK | X_OK) == 0 else { throw bad("its parent \(parent) is not writable: \(errnoString(errno))") }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The last component of `path` (all of it without a slash).
    static func baseName(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
    }

    /// The names in a directory but `.` and `..` (nil if it cannot be read).
    static func entries(_ path: String) -> [String]? {
        guard let d = opendir(path) else { return nil }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: &e.pointee.d_name) { b in
                String(decoding: b.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes a snapshot directory's files and the directory (best effort: what is left
    /// is not a snapshot's).
    static func remove(_ dir: String) {
        for name in entries(dir) ?? [] where snapshotFiles.contains(name) { unlink(dir + "/" + name) }
        rmdir(dir)
    }

    /// Writes a new snapshot with `write` into a temporary directory beside this one (the
    /// argument) and swaps it in; on any failure the temporary directory is removed and the
    /// old snapshot is left as it was.
    func replace<R>(_ write: (String) throws(VMMError) -> R) throws(VMMError) -> R {
        // Checked again: the directory may have changed since the run began.
        _ = try SnapshotDirectory(given)
        let name = Self.baseName(of: path)
        Self.removeStale(in: parent, prefix: "." + name + ".axvm-")
        var temp = ""
        for n in 0..<100 {
            temp = parent + "/." + name + ".axvm-\(getpid())-\(n)"
            if mkdir(temp, 0o755) == 0 { break }
            guard errno == EEXIST, n < 99 else {
                throw .snapshot(path: temp, field: "snapshot directory", reason: "mkdir: \(errnoString(errno))")
            }
        }
        let result: R
        do {
            result = try write(temp)
            try Self.sync(temp)
        } catch {
            Self.remove(temp)
            throw error
        }
        var st = stat()
        if stat(path, &st) == 0 {
            guard ckvm_rename_exchange(temp, path) == 0 else {
                let e = errno
                Self.remove(temp)
                throw .snapshot(path: path, field: "snapshot directory", reason: "swapping in the new snapshot: \(errnoString(e))")
            }
            Self.remove(temp)  // the old snapshot, now under the temporary name
        } else if rename(temp, path) != 0 {
            let e = errno
            Self.remove(temp)
            throw .snapshot(path: path, field: "snapshot directory", reason: "renaming the new snapshot into place: \(errnoString(e))")
        }
        try Self.sync(parent)
        return result
    }

    /// Removes what an axvm killed while writing a snapshot left: temporary directories of
    /// this snapshot (`prefix` + PID + "-" + N) whose process is gone.
    static func removeStale(in parent: String, prefix: String) {
        for entry in entries(parent) ?? [] where entry.hasPrefix(prefix) {
            let rest = entry.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0, Int(rest[rest.index(after: dash)...]) != nil,
                  pid != getpid(), kill(pid, 0) != 0 && errno == ESRCH else { continue }
            remove(parent + "/" + entry)
        }
    }

    /// fsync(2) of a directory: its entries (the files written, the swap) reach the disk.
    static func sync(_ dir: String) throws(VMMError) {
        let fd = ckvm_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .snapshot(path: dir, field: "snapshot directory", reason: "open: \(errnoString(errno))") }
        defer { close(fd) }
        guard fsync(fd) == 0 || errno == EINVAL else {
            throw .snapshot(path: dir, field: "snapshot directory", reason: "fsync: \(errnoString(errno))")
        }
    }
}

/// The NUL-terminated UTF-8 string at `p` (a path from realpath).
func cString(_ p: UnsafePointer<CChar>) -> String {
    String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p)), as: UTF8.self)
}

extension Snapshots {
    /// Every snapshot file and directory a run reads or writes — the directory a snapshot is
    /// written to, the snapshot restored and each of its ancestors (a diff's parents) — as
    /// (what it is, its path), for the output files' checks (`OutputFile`): none of them may
    /// be overwritten by statistics or a fault map. Ancestors are found from each state
    /// file's first bytes (its parent field); a chain that cannot be read this way is
    /// refused by the restore itself.
    public static func files(restoring: String?, writing: String?) -> [(String, String)] {
        var out: [(String, String)] = []
        func add(_ what: String, _ dir: String) {
            out.append((what, dir))
            out.append((what + " state", dir + "/" + SnapshotState.stateFile))
            out.append((what + " memory", dir + "/" + SnapshotState.memoryFile))
        }
        if let writing { add("snapshot directory", writing) }
        var next = restoring
        var depth = 0
        while let dir = next, depth <= RestoreSource.maxChain {
            add(depth == 0 ? "snapshot" : "snapshot's ancestor", dir)
            next = parent(of: dir)
            depth += 1
        }
        return out
    }

    /// A snapshot's parent directory, from its state file's first bytes (nil: none, or unreadable).
    static func parent(of directory: String) -> String? {
        let path = directory + "/" + SnapshotState.stateFile
        let fd = ckvm_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, ckvm_is_regular_file(UInt32(st.st_mode)) != 0 else { return nil }
        // The header, two strings of at most 4 KiB, two sizes, two identities, a CRC, a path.
        var head = [UInt8](repeating: 0, count: 16 << 10)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        var r = ByteReader(Array(head.prefix(n)), path: path)
        do throws(VMMError) {
            try SnapshotState.checkHeader(try r.raw(SnapshotState.headerSize, "header"), path: path)
            _ = try r.string("arch")
            _ = try r.string("kvm flavour")
            _ = try r.raw(8 + 32 + 4, "sizes and identities")
            let parent = try r.string("parent")
            return parent.isEmpty ? nil : parent
        } catch {
            return nil
        }
    }
}
