#!/usr/bin/env bash
# AxAddrSpace benchmark: the Rust crate's workloads plus a C reference walker, one process.
# Cross-module optimization lets the generic library specialize for the benchmark's HAL.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release -Xswiftc -cross-module-optimization --product axbench --scratch-path .build-bench
.build-bench/release/axbench
