#!/usr/bin/env bash
# What the sandbox's filters cost: memtest first touch (every lazy page a userfaultfd fault:
# read, UFFDIO_CONTINUE, wake; every vCPU exit a KVM_RUN through the filter), with and without
# --no-sandbox, runs interleaved in one script: median guest run time per 4 KiB page, and the
# ratio. Linux boot with and without it: scripts/kvm-rig.sh linux x86_64 (the rig's table).
#   scripts/bench-sandbox.sh            (MEM=256 N=7 ORDER=random FAULT_AROUND=4K)
set -euo pipefail
cd "$(dirname "$0")/.."
MEM=${MEM:-256}; N=${N:-7}; ORDER=${ORDER:-random}; FA=${FAULT_AROUND:-4K}
scripts/build-guests.sh >/dev/null
swift build -c release --product axvm >/dev/null
mkdir -p .build-bench
json=.build-bench/sandbox.json
per_page() {  # ns per page, fault p50 µs, exits of one run
    .build/release/axvm run guests/build/memtest.bin --memory ${MEM}M --order "$ORDER" --fault-around "$FA" "$@" \
        --stats-json $json >/dev/null
    python3 -c "import json; d=json.load(open('$json')); print('%.1f %.1f %d' % (d['run_seconds']*1e9/d['pages_touched'], d['fault_p50_ns']/1e3, d['exits']))"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
on=(); off=(); on50=(); off50=()
for i in $(seq "$N"); do
    read -r ns p50 exits < <(per_page); on+=("$ns"); on50+=("$p50")
    read -r ns p50 exits < <(per_page --no-sandbox); off+=("$ns"); off50+=("$p50")
done
a=$(median "${on[@]}"); b=$(median "${off[@]}")
echo "memtest ${MEM}M $ORDER, fault-around $FA, median of $N interleaved runs each"
echo "| configuration | ns/page | fault p50 µs |"
echo "|---|---|---|"
echo "| sandbox on (default) | $a | $(median "${on50[@]}") |"
echo "| --no-sandbox | $b | $(median "${off50[@]}") |"
awk -v a="$a" -v b="$b" 'BEGIN { printf "sandbox on / off: %.3fx\n", a / b }'
