// swift-tools-version: 6.1
// A program that uses only the AxAddrSpace library: its resolution holds that package and
// nothing else (scripts/check-library.sh builds it, runs it and checks the resolution).
import PackageDescription

let package = Package(
    name: "AddrSpaceDemo",
    dependencies: [.package(path: "../../AxAddrSpace")],
    targets: [
        .executableTarget(name: "AddrSpaceDemo",
                          dependencies: [.product(name: "AxAddrSpace", package: "AxAddrSpace")]),
    ],
    swiftLanguageModes: [.v6]
)
