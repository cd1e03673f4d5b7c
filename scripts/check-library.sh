#!/usr/bin/env bash
# AxAddrSpace as a package of its own (AxAddrSpace/): builds and tests it alone, builds its
# DocC documentation with warnings as errors and every public symbol documented
# (scripts/docs.sh), then builds and runs the example consumer (Examples/AddrSpaceDemo) and
# checks that its resolution holds the library and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --package-path AxAddrSpace --build-tests -Xswiftc -warnings-as-errors
swift test --package-path AxAddrSpace --skip-build --no-parallel
scripts/docs.sh
swift build --package-path Examples/AddrSpaceDemo
Examples/AddrSpaceDemo/.build/debug/AddrSpaceDemo
# The consumer's dependency graph: exactly one package, the library, with no dependencies.
deps=$(swift package --package-path Examples/AddrSpaceDemo show-dependencies --format flatlist)
if [ "$deps" != axaddrspace ]; then
    echo "check-library: Examples/AddrSpaceDemo resolves more than the library:" >&2
    echo "$deps" >&2
    exit 1
fi
echo "check-library: the example consumer resolves only axaddrspace"
