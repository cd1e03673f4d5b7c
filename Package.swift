// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "axvm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AxAddrSpace", targets: ["AxAddrSpace"]),
    ],
    targets: [
        // Guest address spaces and nested page tables. Swift standard library only; also
        // compiled in Embedded mode for bare metal by scripts/embedded-check.sh.
        .target(name: "AxAddrSpace"),
        .testTarget(name: "AxAddrSpaceTests", dependencies: ["AxAddrSpace"]),
    ],
    swiftLanguageModes: [.v6]
)
