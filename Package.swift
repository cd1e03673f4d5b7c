// swift-tools-version: 6.1
import PackageDescription

let addrSpace = Target.Dependency.product(name: "AxAddrSpace", package: "AxAddrSpace")

let package = Package(
    name: "axvm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AxVMM", targets: ["AxVMM"]),
        .executable(name: "axvm", targets: ["axvm"]),
    ],
    dependencies: [
        // The library is a package of its own (no dependencies), in this repository.
        .package(path: "AxAddrSpace"),
    ],
    targets: [
        // <linux/kvm.h>, <linux/userfaultfd.h>: ioctl numbers and kvm_run fields for Swift.
        .target(name: "CKVM"),
        // Thin typed Swift over the KVM API: one type per file descriptor.
        // (No swift-system: it does not build in Embedded Swift; `Errno` is our own.)
        .target(name: "KVM", dependencies: ["CKVM"]),
        // The hypervisor: memfd HAL, memslot mirror, lazy pager, x86 boot, run loop.
        .target(name: "AxVMM", dependencies: [addrSpace, "KVM", "CKVM"]),
        // The command line itself is in AxVMM (CommandLine/), shared with Embedded/axvm.
        .executableTarget(name: "axvm", dependencies: ["AxVMM"], plugins: ["BuildCommit"]),
        // `axvm --version`: the git commit, written before every build.
        .plugin(name: "BuildCommit", capability: .buildTool()),
        // Benchmark of the library (scripts/bench-addrspace.sh): the Rust crate's workloads
        // and a C reference walker in the same process.
        .target(name: "CWalker", path: "Benchmarks/Sources/CWalker"),
        .executableTarget(name: "axbench", dependencies: [addrSpace, "CWalker"], path: "Benchmarks/Sources/axbench"),
        .testTarget(name: "AxVMMTests", dependencies: ["AxVMM", addrSpace, "KVM", "CKVM"]),
    ],
    swiftLanguageModes: [.v6]
)
