#!/usr/bin/env bash
# Concurrent lazy faults under stress: overlap-mode memtest (every vCPU touches every page,
# each in its own order) and retouch (reclaim while other vCPUs fill and read), many seeds,
# several vCPUs and fault threads, for MINUTES minutes. Every run must exit 0 with the
# computed checksum, no mismatch, every populated page mapped once and AddrSpace = mincore.
#
#   scripts/stress-smp.sh [MINUTES] [VCPUS]      defaults: 2 minutes, 4 vCPUs
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-2}
vcpus=${2:-4}
[[ $minutes =~ ^[0-9]+$ && $vcpus =~ ^[0-9]+$ ]] || { echo "usage: scripts/stress-smp.sh [MINUTES] [VCPUS]" >&2; exit 64; }
scripts/build-guests.sh >/dev/null
swift build -c release --product axvm >/dev/null
axvm=.build/release/axvm
json=$(mktemp)
trap 'rm -f "$json"' EXIT
field() { sed -n "s/^  \"$1\": \\(.*\\),\\{0,1\\}\$/\\1/p" "$json" | tr -d ','; }
end=$(( $(date +%s) + minutes * 60 ))
runs=0 failures=0 faults=0 minor=0 pages=0 seed=1
while (( $(date +%s) < end )); do
    seed=$(( seed + 1 ))
    threads=$(( seed % 2 + 1 ))
    fa=$(( 4096 << (seed % 3 * 4) ))           # 4K, 64K, 1M
    if (( seed % 3 == 0 )); then
        args=(guests/build/retouch.bin --memory 32M --vcpus "$vcpus" --fault-threads "$threads")
    else
        args=(guests/build/memtest.bin --memory 64M --vcpus "$vcpus" --fault-threads "$threads" --memtest-mode overlap
              --order random --seed "$seed" --fault-around "$fa")
    fi
    status=0
    "$axvm" run "${args[@]}" --stats-json "$json" >/dev/null 2>&1 || status=$?
    runs=$(( runs + 1 ))
    ok=1
    [[ $status == 0 ]] || ok=0
    [[ $(field residency_mismatches) == 0 ]] || ok=0
    [[ $(field mismatches) == 0 ]] || ok=0
    if (( ok == 0 )); then
        failures=$(( failures + 1 ))
        echo "FAIL (status $status): axvm run ${args[*]}" >&2
    fi
    faults=$(( faults + $(field faults) ))
    minor=$(( minor + $(field minor_faults) ))
    pages=$(( pages + $(field pages_mapped_by_faults) ))
done
echo "stress-smp: $runs runs in $minutes min ($vcpus vCPUs, 1-2 fault threads), $failures failed; $faults faults, $minor duplicate/minor events, $pages pages mapped"
(( failures == 0 ))
