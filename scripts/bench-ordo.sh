#!/usr/bin/env bash
# AxAddrSpace under the ordo-one benchmark package (Benchmarks/ordo): fault, populate and
# translate (Swift and the C reference walker, same run). Percentiles over 5 samples.
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks/ordo"
swift package --allow-writing-to-package-directory benchmark --no-progress --format markdown "$@"
