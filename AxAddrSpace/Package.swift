// swift-tools-version: 6.1
// AxAddrSpace on its own: a package with no dependencies, so a consumer that wants only the
// guest address space library resolves nothing else (Examples/AddrSpaceDemo shows one).
// The repository's root package (axvm) depends on it by path.
import PackageDescription

let package = Package(
    name: "AxAddrSpace",
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
