import AxVMM
#if canImport(Glibc)
import Glibc
#endif

/// The SwiftPM front end of axvm: the shared command line (`Frontend.main`: the option
/// table in Sources/AxVMM/CommandLine, its parser, help, manual and completions), as the
/// Embedded front end (Embedded/axvm) runs it.
@main
struct Axvm {
    static func main() {
        exit(Frontend.main(argc: CommandLine.argc, argv: CommandLine.unsafeArgv,
                           version: CommandHelp.version(commit: buildCommit, build: "SwiftPM build")))
    }
}
