#!/usr/bin/env bash
# Guest first-touch cost per 4 KiB page on KVM, in one run: axvm (AddrSpace + userfaultfd)
# lazy with 4 KiB / 64 KiB / 2 MiB fault-around and populated, against the C userfaultfd
# baseline VMM (Benchmarks/uffd-baseline) lazy and populated, on the same memtest guest.
# Median of N runs (default 3) each; per-page time = guest run time / test pages.
# Then: hello, process start to exit (hyperfine if installed).
set -euo pipefail
cd "$(dirname "$0")/.."
MEM=${MEM:-256}; N=${N:-3}; ORDER=${ORDER:-random}
scripts/build-guests.sh >/dev/null
swift build -c release --product axvm >/dev/null
swift_bin=$(dirname "$(command -v swiftc)")
mkdir -p .build-bench
"$swift_bin/clang" -O2 -o .build-bench/uffd-baseline Benchmarks/uffd-baseline/baseline.c -lpthread
order_num=$(case $ORDER in sequential) echo 0;; random) echo 1;; strided) echo 2;; esac)

axvm_ns() {  # per-page run ns of one axvm run
    local json=.build-bench/stats.json
    .build/release/axvm run guests/build/memtest.bin --memory ${MEM}M --order $ORDER "$@" --stats-json $json >/dev/null
    python3 -c "import json; d=json.load(open('$json')); print(d['run_seconds']*1e9/d['pages_touched'])"
}
c_ns() {
    .build-bench/uffd-baseline guests/build/memtest.bin $MEM $1 $order_num 1 | python3 -c "
import sys; d=dict(kv.split('=') for kv in sys.stdin.read().split()); print(int(d['run_ns'])/int(d['pages']))"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

declare -A r
names=("C baseline, lazy (uffd, 4 KiB)" "axvm lazy, 4 KiB fault-around" "axvm lazy, 64 KiB fault-around"
       "axvm lazy, 2 MiB fault-around" "C baseline, populated" "axvm populated")
for name in "${names[@]}"; do r[$name]=""; done
for i in $(seq $N); do   # interleaved, so drifts hit every configuration alike
    r[${names[0]}]+=" $(c_ns lazy)"
    r[${names[1]}]+=" $(axvm_ns --fault-around 4K)"
    r[${names[2]}]+=" $(axvm_ns --fault-around 64K)"
    r[${names[3]}]+=" $(axvm_ns --fault-around 2M)"
    r[${names[4]}]+=" $(c_ns populated)"
    r[${names[5]}]+=" $(axvm_ns --populate)"
done
base=$(median ${r[${names[0]}]}); pop=$(median ${r[${names[5]}]})
echo "memtest, $MEM MiB, $ORDER order, median of $N; ns per 4 KiB page of guest run time"
echo "| configuration | ns/page | vs C lazy baseline | vs axvm populated |"
echo "|---|---|---|---|"
for name in "${names[@]}"; do
    m=$(median ${r[$name]})
    python3 -c "print('| $name | %.0f | %.2fx | %.2fx |' % ($m, $m/$base, $m/$pop))"
done
if command -v hyperfine >/dev/null; then
    hyperfine -N -w 3 -r 20 '.build/release/axvm run guests/build/hello.bin' 2>/dev/null | grep -E "Time|Range"
fi
