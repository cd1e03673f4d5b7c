// swift-tools-version: 6.1
// The AxAddrSpace benchmarks under the ordo-one `benchmark` package: the Rust crate's
// workloads and the C reference walker as benchmarks of one run. Run from here:
//   swift package --allow-writing-to-package-directory benchmark
// Sources/AxAddrSpace and Sources/CWalker are symlinks to the project's own sources, so the
// library is compiled here as it is in the main package (no copy, no dependency naming).
import PackageDescription

let package = Package(
    name: "AxAddrSpaceBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Cross-module optimization lets the generic library specialize for the benchmark HAL
        // (unsafe flags are fine here: this package is never a dependency).
        .target(name: "AxAddrSpace", swiftSettings: [.unsafeFlags(["-cross-module-optimization"])]),
        .target(name: "CWalker"),
        .executableTarget(
            name: "AddrSpaceBenchmarks",
            dependencies: ["AxAddrSpace", "CWalker", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/AddrSpaceBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
