import Foundation
import PackagePlugin

/// Writes `BuildCommit.swift` (`let buildCommit = "<git describe>"`) for the target before
/// every build, so that `axvm --version` names the commit the binary was built from. The
/// file is rewritten only when the commit changes (no rebuild otherwise). Outside a git
/// checkout the commit is "unknown".
@main
struct BuildCommit: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let out = context.pluginWorkDirectoryURL.appending(path: "BuildCommit")
        // The same shell line as scripts/build-static.sh uses for the Embedded build.
        let script = """
            c=$(git -C "$1" describe --always --dirty --abbrev=12 --exclude '*' 2>/dev/null || echo unknown)
            mkdir -p "$2"; line="let buildCommit = \\"$c\\""
            [ "$(cat "$2/BuildCommit.swift" 2>/dev/null)" = "$line" ] || printf '%s\\n' "$line" > "$2/BuildCommit.swift"
            """
        return [.prebuildCommand(
            displayName: "axvm: commit for --version",
            executable: URL(filePath: "/bin/sh"),
            arguments: ["-c", script, "sh", context.package.directoryURL.path, out.path],
            outputFilesDirectory: out)]
    }
}
