// swift-tools-version: 6.1
// Benchmarks of AxAddrSpace against the Rust crate's workloads (../../shared/reference/
// axaddrspace-bench.md) and a C reference page walker. Run: scripts/bench-addrspace.sh
import PackageDescription

let package = Package(
    name: "Benchmarks",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CWalker", cSettings: [.unsafeFlags(["-O2"])]),
        .executableTarget(name: "axbench", dependencies: [
            "CWalker", .product(name: "AxAddrSpace", package: "axvm"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
