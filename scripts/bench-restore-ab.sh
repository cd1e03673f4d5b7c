#!/usr/bin/env bash
# Restore latency and clone memory of this axvm against another build (an older commit), in
# one run, interleaved so that a slow minute hits both alike (docs/snapshots.md, "Measured"):
#   - each build snapshots the memtest guest at its half-way line (its own format);
#   - N rounds, alternating: a lazy and a populated restore with each build, the start of the
#     restore to the first KVM_RUN (setup_seconds), p50 and p90, and the ratio new / old;
#   - 4 lazy clones at once with each build: their VmRSS and RssShmem at the end together
#     (a restore that maps the snapshot file counts the file's pages it read in every clone).
#   scripts/bench-restore-ab.sh OLD_AXVM [MEMORY] [N]     default 512M, 20
# OLD_AXVM: e.g. git worktree add /tmp/old COMMIT && (cd /tmp/old && swift build -c release)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: scripts/bench-restore-ab.sh OLD_AXVM [MEMORY] [N]}
MEM=${2:-512M}
N=${3:-20}
swift build -c release --product axvm >/dev/null
NEW=.build/release/axvm
work=$(mktemp -d /tmp/axvm-bench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
jf() { sed -n "s/^  \"$2\": \(.*\)\$/\1/p" "$1" | sed 's/,$//; s/^"//; s/"$//'; }
echo "restore A/B: memtest, $MEM, random order; new $($NEW --version), old $($OLD --version)"
for b in new old; do
    bin=$NEW; [ $b = old ] && bin=$OLD
    $bin run guests/build/memtest.bin --memory "$MEM" --order random --snapshot "$work/snap-$b" --snapshot-on halfway \
        --snapshot-and-exit --stats-json "$work/s-$b.json" >/dev/null
    echo "  $b: snapshot written in $(awk -v n="$(jf "$work/s-$b.json" snapshot_total_ns)" 'BEGIN { printf "%.0f", n / 1e6 }') ms"
done
declare -A lazy=() pop=()
for i in $(seq 1 "$N"); do
    for b in new old; do
        bin=$NEW; [ $b = old ] && bin=$OLD
        $bin restore "$work/snap-$b" --timeout 600 --stats-json "$work/l.json" >/dev/null
        lazy[$b]="${lazy[$b]:-} $(jf "$work/l.json" setup_seconds)"
        $bin restore "$work/snap-$b" --populate --timeout 600 --stats-json "$work/p.json" >/dev/null
        pop[$b]="${pop[$b]:-} $(jf "$work/p.json" setup_seconds)"
    done
done
python3 - "${lazy[new]}" "${lazy[old]}" "${pop[new]}" "${pop[old]}" <<'PY'
import sys
def q(s, p):
    v = sorted(float(x) * 1000 for x in s.split())
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
for label, new, old in (("lazy restore", sys.argv[1], sys.argv[2]), ("populated restore", sys.argv[3], sys.argv[4])):
    print(f"  {label:<18} to first KVM_RUN: new p50 {q(new, .5):8.2f} ms p90 {q(new, .9):8.2f}   "
          f"old p50 {q(old, .5):8.2f} ms p90 {q(old, .9):8.2f}   new/old p50 {q(new, .5) / q(old, .5):.2f}x")
PY
for b in new old; do
    bin=$NEW; [ $b = old ] && bin=$OLD
    for i in 1 2 3 4; do
        $bin restore "$work/snap-$b" --quiet --timeout 600 --stats-json "$work/c$i.json" >/dev/null 2>&1 &
    done
    wait
    rss=0; shmem=0
    for i in 1 2 3 4; do
        rss=$((rss + $(jf "$work/c$i.json" process_rss_bytes))); shmem=$((shmem + $(jf "$work/c$i.json" shmem_rss_bytes)))
    done
    echo "  $b: 4 clones at their end: VmRSS $((rss >> 20)) MiB, RssShmem $((shmem >> 20)) MiB together"
done
