#!/usr/bin/env bash
# The main job: builds axvm (release) and the guests, then runs memtest on KVM with 256 MiB
# of lazily populated RAM touched in random order, and prints the statistics.
# Extra arguments go to `axvm run` (e.g. --fault-around 64K, --populate, --memory 1G).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-guests.sh
swift build -c release --product axvm
# The guest of the host's architecture (guests/build/aarch64 on arm64 hosts).
guest=guests/build/memtest.bin
[ "$(uname -m)" = aarch64 ] && guest=guests/build/aarch64/memtest.bin
.build/release/axvm check
echo
map=.build/demo-faults.svg
.build/release/axvm run "$guest" --memory 256M --order random --stats --fault-map "$map" "$@"
echo
echo "fault map (guest memory by first touch, faults over time): $map"
