#!/usr/bin/env bash
# AxAddrSpace benchmark: the Rust crate's workloads plus a C reference walker, one process.
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
swift build -c release -Xswiftc -cross-module-optimization --product axbench
.build/release/axbench
