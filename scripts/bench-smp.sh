#!/usr/bin/env bash
# Lazy-fault throughput against vCPUs × fault threads, axvm next to the C userfaultfd
# baseline VMM (Benchmarks/uffd-baseline) doing the same thing, in one run: memtest, lazy
# 4 KiB faults, MEM MiB (256), random order, split mode (each vCPU its share of the pages),
# vCPUs ∈ VCPUS (1 2 4) × fault threads ∈ THREADS (1 2); overlap mode (every vCPU touches
# every page, each in its own order: concurrent faults on one page) with OVERLAP_THREADS (2)
# fault threads per vCPU count; and the C baseline with axvm's fault-thread recipe (reads up
# to 64 messages at once, materializes with fallocate) at 1 × 1 and 2 × 2. Configurations
# interleaved, N (3) rounds, medians. Every run must exit 0 with the one-vCPU checksum.
#
# First table:
#   pages/s   axvm: pages mapped by faults / run seconds; C: test pages / run time
#   speed-up  against 1 vCPU × 1 fault thread of the same VMM (overlap too: distinct pages)
#   dup       events for a page already mapped: C CONTINUEs that returned EEXIST, axvm minor
#             faults (the 6 pages the loader wrote count there too)
# Second table, why it scales as it does:
#   cores     the process's CPU time (user + system, all threads) / run time
#   CPU µs/page  that CPU time / pages: stays put if the work per fault does not grow
#   busy      fault threads' summed service time (read → guest woken, wall clock) / run time
#   rq wait   C: µs per page its threads spent runnable but waiting for a CPU (schedstat)
#   batched   C: share of the messages read together with another one (served in series)
#
#   scripts/bench-smp.sh              about 2 minutes on 2 cores after the build (N=1: 40 s)
#   NICE=-10 scripts/bench-smp.sh     root: measures in its own session with autogroup nice
#                                     -10, so that other sessions' work on a shared machine
#                                     takes less of the cores (builds are not affected)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n ${NICE:-} && -z ${BENCH_SMP_SESSION:-} ]]; then
    export BENCH_SMP_SESSION=1
    exec setsid -w "$0" "$@"   # a session of its own: its own autogroup
fi
MEM=${MEM:-256}; N=${N:-3}; VCPUS=${VCPUS:-"1 2 4"}; THREADS=${THREADS:-"1 2"}; OVERLAP_THREADS=${OVERLAP_THREADS:-2}
scripts/build-guests.sh >/dev/null
# Another build in the same .build makes SwiftPM wait or fail: retry for a while.
build_log=$(mktemp)
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    swift build -c release --product axvm >"$build_log" 2>&1 && break
    if (( attempt == 10 )) || ! grep -qi "another instance\|lock" "$build_log"; then
        cat "$build_log" >&2; rm -f "$build_log"; exit 1
    fi
    echo "bench-smp: another build holds .build; retrying in 30 s" >&2
    sleep 30
done
rm -f "$build_log"
swift_bin=$(dirname "$(command -v swiftc)")
mkdir -p .build-bench
"$swift_bin/clang" -O2 -o .build-bench/uffd-baseline Benchmarks/uffd-baseline/baseline.c -lpthread
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# One line per run: vmm mode vcpus threads pages/s p50 p99 busy dup cores cpu/page rqwait batched checksum
results=$out/results
TIMEFORMAT='%3U %3S'   # `time`: the child's user and system CPU seconds

axvm_run() {  # vcpus threads mode
    local json=$out/stats.json
    rm -f "$json"
    if ! { time .build/release/axvm run guests/build/memtest.bin --memory "${MEM}M" --order random --timeout 120 \
        --vcpus "$1" --fault-threads "$2" --memtest-mode "$3" --stats-json "$json" >"$out/axvm.out" 2>&1; } 2>"$out/cpu"; then
        echo "axvm run failed: --vcpus $1 --fault-threads $2 --memtest-mode $3" >&2; cat "$out/axvm.out" >&2; exit 1
    fi
    python3 - "$json" "$3 $1 $2" "$(cat "$out/cpu")" >>"$results" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
run, pages = d["run_seconds"], d["pages_mapped_by_faults"]
busy = sum(t["busy_ns"] for t in d["fault_threads"]) / (run * 1e9)
cpu = sum(map(float, sys.argv[3].split()))
print("axvm", sys.argv[2], pages / run, d["fault_p50_ns"], d["fault_p99_ns"], busy, d["minor_faults"],
      cpu / run, cpu * 1e6 / pages, -1, -1, "%x" % d["checksum"])
EOF
}
c_run() {  # label vcpus threads mode [batch fill]
    local label=$1; shift
    if ! { time .build-bench/uffd-baseline guests/build/memtest.bin "$MEM" lazy 1 1 "$@" >"$out/c.out"; } 2>"$out/cpu"; then
        echo "C baseline failed: $*: $(cat "$out/c.out")" >&2; exit 1
    fi
    python3 - "$(cat "$out/c.out")" "$label $3 $1 $2" "$(cat "$out/cpu")" >>"$results" <<'EOF'
import sys
d = dict(kv.split("=") for kv in sys.argv[1].split())
run_ns, pages = int(d["run_ns"]), int(d["pages"])
threads = [v.split(":") for k, v in d.items() if k[0] == "t" and k[1:].isdigit()]
vcpus = [v.split(":") for k, v in d.items() if k[0] == "v" and k[1:].isdigit()]
events = sum(int(t[0]) for t in threads)
busy = sum(int(t[1]) for t in threads) / run_ns
rqwait = (sum(int(t[3]) for t in threads) + sum(int(v[4]) for v in vcpus)) / 1e3 / pages
cpu = sum(map(float, sys.argv[3].split()))
print(sys.argv[2], pages * 1e9 / run_ns, 0, 0, busy, d["eexist"], cpu * 1e9 / run_ns, cpu * 1e6 / pages, rqwait,
      int(d["batched"]) / events, d["checksum"])
EOF
}

if [[ -n ${NICE:-} ]]; then
    echo "$NICE" >/proc/self/autogroup || { echo "bench-smp: cannot set autogroup nice $NICE (root only)" >&2; exit 1; }
fi
echo "memtest lazy 4 KiB, $MEM MiB, random order; medians of $N interleaved rounds${NICE:+; autogroup nice $NICE}"
echo "before: $(uptime)"
for round in $(seq "$N"); do
    for v in $VCPUS; do
        for t in $THREADS; do c_run C "$v" "$t" split; axvm_run "$v" "$t" split; done
    done
    for v in $VCPUS; do c_run C "$v" "$OVERLAP_THREADS" overlap; axvm_run "$v" "$OVERLAP_THREADS" overlap; done
    c_run C-recipe 1 1 split 64 fallocate
    c_run C-recipe 2 2 split 64 fallocate
done
echo "after:  $(uptime)"
python3 - "$results" <<'EOF'
import sys, statistics
rows, sums = {}, set()
for line in open(sys.argv[1]):
    vmm, mode, v, t, *vals, cs = line.split()
    rows.setdefault((vmm, mode, int(v), int(t)), []).append([float(x) for x in vals])
    sums.add(cs)
if len(sums) != 1:
    sys.exit("checksums differ between runs: %s" % sorted(sums))
PPS, P50, P99, BUSY, DUP, CORES, CPP, RQ, BATCHED = range(9)
def m(vmm, mode, v, t, i): return statistics.median(r[i] for r in rows[(vmm, mode, v, t)])
keys = sorted({k[1:] for k in rows if k[0] == "C"}, key=lambda k: (k[0] != "split", k[1], k[2]))
# Speed-ups against the smallest split configuration measured (1 × 1 unless VCPUS/THREADS say otherwise).
base = {vmm: m(*min(k for k in rows if k[:2] == (vmm, "split")), PPS) for vmm in ("C", "axvm", "C-recipe")}
print("| mode | vCPUs × fault threads | C pages/s | C speed-up | axvm pages/s | axvm speed-up | axvm/C | axvm p50 µs | axvm p99 µs | dup C / axvm |")
print("|---|---|---|---|---|---|---|---|---|---|")
for mode, v, t in keys:
    c, a = m("C", mode, v, t, PPS), m("axvm", mode, v, t, PPS)
    print("| %s | %d × %d | %.0f | %.2fx | %.0f | %.2fx | %.2f | %.1f | %.1f | %d / %d |" % (
        mode, v, t, c, c / base["C"], a, a / base["axvm"], a / c, m("axvm", mode, v, t, P50) / 1e3,
        m("axvm", mode, v, t, P99) / 1e3, m("C", mode, v, t, DUP), m("axvm", mode, v, t, DUP)))
for v, t in ((1, 1), (2, 2)):
    c = m("C-recipe", "split", v, t, PPS)
    print("| split, C with axvm's recipe (batch 64, fallocate) | %d × %d | %.0f | %.2fx | | | | | | |" % (
        v, t, c, c / base["C-recipe"]))
print()
print("| mode | vCPUs × fault threads | C cores | C CPU µs/page | C busy | C rq wait µs/page | C batched | axvm cores | axvm CPU µs/page | axvm busy |")
print("|---|---|---|---|---|---|---|---|---|---|")
for mode, v, t in keys:
    print("| %s | %d × %d | %.2f | %.1f | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f |" % (
        mode, v, t, m("C", mode, v, t, CORES), m("C", mode, v, t, CPP), m("C", mode, v, t, BUSY),
        m("C", mode, v, t, RQ), m("C", mode, v, t, BATCHED),
        m("axvm", mode, v, t, CORES), m("axvm", mode, v, t, CPP), m("axvm", mode, v, t, BUSY)))
for v, t in ((1, 1), (2, 2)):
    k = ("C-recipe", "split", v, t)
    print("| split, C with axvm's recipe | %d × %d | %.2f | %.1f | %.2f | %.1f | %.2f | | | |" % (
        v, t, m(*k, CORES), m(*k, CPP), m(*k, BUSY), m(*k, RQ), m(*k, BATCHED)))
print("checksum %s in every run" % sums.pop())
EOF
