#!/usr/bin/env bash
# Snapshot and restore of the memtest guest on this machine's KVM, side by side in one run
# (docs/snapshots.md, "Measured"):
#   - the snapshot at memtest's half-way line: pages, memory file size and blocks on disk,
#     time to pause the vCPUs and to write it;
#   - restore latency, N restores each (default 30, as Firecracker's load_snapshot test):
#     the restore call to the first KVM_RUN (reading and checking the snapshot, the VM, the
#     memory areas, the vCPU and VM state), lazy and populated, p50 and p90, against a fresh
#     lazy boot's start to its first KVM_RUN; and the floor every axvm process pays before
#     that (`axvm --version`);
#   - to the guest's next milestone (its end): a lazy restore, a populated one, and a fresh
#     boot from its half-way line to its end;
#   - pages copied in after a lazy restore against the snapshot's pages;
#   - clones: 4 and 16 lazy restores of one snapshot at once: their guest memory (memfd
#     pages, private to each) together, against that many full copies.
#   scripts/bench-snapshot.sh [MEMORY] [N]     default 512M, 30
set -euo pipefail
cd "$(dirname "$0")/.."
MEM=${1:-512M}
N=${2:-30}
swift build -c release --product axvm >/dev/null
AXVM=.build/release/axvm
work=$(mktemp -d /tmp/axvm-bench-snap.XXXXXX)
trap 'rm -rf "$work"' EXIT
jf() { sed -n "s/^  \"$2\": \(.*\)\$/\1/p" "$1" | sed 's/,$//; s/^"//; s/"$//'; }
stats() {  # stats LABEL VALUES... (seconds): p50, p90, min, max in ms
    python3 - "$@" <<'EOF'
import sys
label, v = sys.argv[1], sorted(float(x) * 1000 for x in sys.argv[2:])
q = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print(f"  {label:<34} p50 {q(0.5):8.2f} ms   p90 {q(0.9):8.2f} ms   min {v[0]:8.2f}   max {v[-1]:8.2f}   (n={len(v)})")
EOF
}

echo "axvm snapshot benchmark: memtest, $MEM, random order, seed 1, $(nproc) CPUs, KVM $(.build/release/axvm check 2>/dev/null | sed -n 's/^KVM flavour: //p' | cut -d' ' -f1)"
$AXVM run guests/build/memtest.bin --memory "$MEM" --order random --stats-json "$work/fresh.json" >/dev/null
$AXVM run guests/build/memtest.bin --memory "$MEM" --order random --snapshot "$work/snap" --snapshot-on halfway \
    --snapshot-and-exit --stats-json "$work/snap.json" >/dev/null
pages=$(jf "$work/snap.json" snapshot_pages)
echo "snapshot at the half-way line ($(awk -v n="$(jf "$work/snap.json" snapshot_at_ns)" 'BEGIN { printf "%.1f", n / 1e6 }') ms after the vCPUs started):"
echo "  $pages pages ($(( pages * 4096 >> 20 )) MiB) of $(( $(jf "$work/snap.json" memory_bytes) >> 20 )) MiB RAM;" \
     "memory file $(( $(jf "$work/snap.json" snapshot_memory_file_bytes) >> 20 )) MiB long, $(( $(jf "$work/snap.json" snapshot_disk_bytes) >> 20 )) MiB on disk;" \
     "state $(jf "$work/snap.json" snapshot_state_bytes) bytes"
echo "  vCPUs paused after $(awk -v n="$(jf "$work/snap.json" snapshot_pause_ns)" 'BEGIN { printf "%.3f", n / 1e6 }') ms, written after $(awk -v n="$(jf "$work/snap.json" snapshot_total_ns)" 'BEGIN { printf "%.1f", n / 1e6 }') ms"

declare -a lazy_setup=() pop_setup=() fresh_setup=() lazy_run=() pop_run=() fresh_run=()
for i in $(seq 1 "$N"); do  # interleaved, so that a slow minute hits all three alike
    $AXVM restore "$work/snap" --timeout 600 --stats-json "$work/l.json" >/dev/null
    lazy_setup+=("$(jf "$work/l.json" setup_seconds)"); lazy_run+=("$(jf "$work/l.json" run_seconds)")
    $AXVM restore "$work/snap" --populate --timeout 600 --stats-json "$work/p.json" >/dev/null
    pop_setup+=("$(jf "$work/p.json" setup_seconds)"); pop_run+=("$(jf "$work/p.json" run_seconds)")
    $AXVM run guests/build/memtest.bin --memory "$MEM" --order random --stats-json "$work/f.json" >/dev/null
    fresh_setup+=("$(jf "$work/f.json" setup_seconds)"); fresh_run+=("$(jf "$work/f.json" run_seconds)")
done
grep -q "\"checksum\": $(jf "$work/fresh.json" checksum)," "$work/l.json" || { echo "lazy restore: wrong checksum" >&2; exit 1; }
grep -q "\"checksum\": $(jf "$work/fresh.json" checksum)," "$work/p.json" || { echo "populated restore: wrong checksum" >&2; exit 1; }
echo "restore latency, start of the restore (or run) to the first KVM_RUN:"
stats "lazy restore" "${lazy_setup[@]}"
stats "populated restore" "${pop_setup[@]}"
stats "fresh lazy boot" "${fresh_setup[@]}"
python3 - "$AXVM" <<'EOF'
import subprocess, sys, time
t = []
for _ in range(30):
    t0 = time.perf_counter(); subprocess.run([sys.argv[1], "--version"], stdout=subprocess.DEVNULL); t.append(time.perf_counter() - t0)
t.sort()
print(f"  every axvm process first pays its start: p50 {t[15] * 1000:.2f} ms, min {t[0] * 1000:.2f} ms (axvm --version, 30 runs)")
EOF
at=$(jf "$work/snap.json" snapshot_at_ns)
fresh_rest=()
for r in "${fresh_run[@]}"; do fresh_rest+=("$(awk -v r="$r" -v a="$at" 'BEGIN { print r - a / 1e9 }')"); done
echo "first KVM_RUN to the guest's end (its next console line):"
stats "lazy restore" "${lazy_run[@]}"
stats "populated restore" "${pop_run[@]}"
stats "fresh boot, half-way line to end" "${fresh_rest[@]}"
echo "pages copied in by the lazy restore: $(jf "$work/l.json" restore_pages_copied) of the snapshot's $(jf "$work/l.json" restore_snapshot_pages)"

for clones in 4 16; do
    t0=$(date +%s%N)
    for i in $(seq 1 "$clones"); do
        $AXVM restore "$work/snap" --quiet --timeout 600 --stats-json "$work/c$i.json" >/dev/null 2>&1 &
    done
    wait
    t1=$(date +%s%N)
    ok=0; copied=0; populated=0
    for i in $(seq 1 "$clones"); do
        grep -q "\"checksum\": $(jf "$work/fresh.json" checksum)," "$work/c$i.json" && ok=$((ok + 1))
        copied=$((copied + $(jf "$work/c$i.json" restore_pages_copied) * 4096))
        populated=$((populated + $(jf "$work/c$i.json" populated_bytes)))
    done
    echo "$clones clones at once: $ok right checksums in $(( (t1 - t0) / 1000000 )) ms; copied in from the snapshot together" \
         "$(( copied >> 20 )) MiB against $clones full copies $(( clones * pages * 4096 >> 20 )) MiB; guest memory at their end" \
         "$(( populated >> 20 )) MiB (memtest reads back every page it wrote: each clone touches all of the snapshot)"
done
