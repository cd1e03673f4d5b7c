import AxVMM

// The Embedded Swift front end of axvm (scripts/build-static.sh): the shared command line
// (`Frontend.main`: the option table in Sources/AxVMM/CommandLine, its parser, help, manual
// and completions), as the SwiftPM front end (Sources/axvm) runs it. start.c's `main` calls
// this: Embedded Swift has no `CommandLine`.
@_cdecl("axvm_main")
func axvmMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    Frontend.main(argc: argc, argv: argv, version: CommandHelp.version(commit: buildCommit, build: "Embedded static build"))
}
