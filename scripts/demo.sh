#!/usr/bin/env bash
# The main job: builds axvm (release) and the guests, then runs memtest on KVM with 256 MiB
# of lazily populated RAM touched in random order, and prints the statistics.
# Extra arguments go to `axvm run` (e.g. --fault-around 64K, --populate, --memory 1G).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-guests.sh
swift build -c release --product axvm
.build/release/axvm check
echo
.build/release/axvm run guests/build/memtest.bin --memory 256M --order random --stats "$@"
