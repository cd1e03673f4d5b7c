// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "axvm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AxAddrSpace", targets: ["AxAddrSpace"]),
        .library(name: "AxVMM", targets: ["AxVMM"]),
        .executable(name: "axvm", targets: ["axvm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Guest address spaces and nested page tables. Swift standard library only; also
        // compiled in Embedded mode for bare metal by scripts/embedded-check.sh.
        .target(name: "AxAddrSpace"),
        // <linux/kvm.h>, <linux/userfaultfd.h>: ioctl numbers and kvm_run fields for Swift.
        .target(name: "CKVM"),
        // Thin typed Swift over the KVM API: one type per file descriptor.
        // (No swift-system: it does not build in Embedded Swift; `Errno` is our own.)
        .target(name: "KVM", dependencies: ["CKVM"]),
        // The hypervisor: memfd HAL, memslot mirror, lazy pager, x86 boot, run loop.
        .target(name: "AxVMM", dependencies: ["AxAddrSpace", "KVM", "CKVM"]),
        .executableTarget(name: "axvm", dependencies: ["AxVMM", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Benchmark of the library (scripts/bench-addrspace.sh): the Rust crate's workloads
        // and a C reference walker in the same process.
        .target(name: "CWalker", path: "Benchmarks/Sources/CWalker"),
        .executableTarget(name: "axbench", dependencies: ["AxAddrSpace", "CWalker"], path: "Benchmarks/Sources/axbench"),
        .testTarget(name: "AxAddrSpaceTests", dependencies: ["AxAddrSpace"]),
        .testTarget(name: "AxVMMTests", dependencies: ["AxVMM", "KVM", "CKVM"]),
    ],
    swiftLanguageModes: [.v6]
)
