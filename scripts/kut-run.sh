#!/bin/sh
# Runs kvm-unit-tests entries (a built tree's unittests.cfg) on axvm or on QEMU and prints one
# line per entry and a summary. POSIX sh and awk only: it runs on the host and in the rigs'
# busybox. scripts/kvm-unit-tests.sh builds the suite and calls this; docs/kvm-unit-tests.md.
#
#   kut-run.sh [-t axvm|qemu] [-o LOGDIR] [-s SCALE] DIR [NAME...]
#   kut-run.sh -l DIR            the names of the entries run by default, one per line
#
# DIR holds unittests.cfg and the .flat files (the suite's x86/, arm/ or riscv/ after make). NAME...
# picks entries (default: every entry outside the nodefault group). -s multiplies every
# time limit (the rigs run under an emulator). Environment: AXVM (default axvm), QEMU
# (default qemu-system-$(uname -m)), MAX_SMP (default: the host's CPUs).
#
# How an entry runs (the suite's own x86/run and arm/run, scripts/runtime.bash):
#   axvm  axvm boot --kernel FILE --cmdline TEST_ARGS --vcpus SMP --memory MB --timeout T
#         (x86 and riscv64: --initrd ENV, an environment with TEST_DEVICE=0: no pc-testdev on
#         axvm; arm64: --raw)
#   qemu  x86: -machine q35 -cpu host + pc-testdev, isa-debug-exit, pci-testdev, -kernel FILE
#         arm64: -machine virt,gic-version=host -cpu host -kernel FILE; riscv64: -machine virt
#         -cpu host -bios none -initrd ENV -kernel FILE; all accel=kvm; the
#         entry's qemu_params after them, its -cpu left out (both VMMs get the host's CPU)
# Results: x86 from the exit code the test wrote to port 0xf4 (axvm's exit status is that code;
# QEMU's is code << 1 | 1); arm64 and riscv64 from the "EXIT: STATUS=n" line (n = code << 1 | 1). Code 0
# is PASS, 77 >> 1 = 38 SKIP, anything else FAIL; a time limit reached is TIMEOUT (a failure).
# An entry for another arch, TCG, a missing host feature (check =) or disabled for this
# target (disabled_if) is SKIP with the reason.
set -u
target=axvm logdir=${TMPDIR:-/tmp}/kut-logs scale=1 list=0
while getopts t:o:s:l opt; do
    case $opt in
        l) list=1 ;;
        t) target=$OPTARG ;;
        o) logdir=$OPTARG ;;
        s) scale=$OPTARG ;;
        *) echo "usage: $0 [-t axvm|qemu] [-o LOGDIR] [-s SCALE] DIR [NAME...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-t axvm|qemu] [-o LOGDIR] [-s SCALE] DIR [NAME...]" >&2; exit 2; }
dir=$1; shift
case $target in axvm|qemu) ;; *) echo "kut-run: target $target: axvm or qemu" >&2; exit 2 ;; esac
[ -f "$dir/unittests.cfg" ] || { echo "kut-run: $dir/unittests.cfg: no such file (build the suite first)" >&2; exit 2; }
arch=$(uname -m)
case $arch in
    x86_64) kutarch=x86_64 ;; aarch64) kutarch=arm64 ;; riscv64) kutarch=riscv64 ;;
    *) echo "kut-run: host $arch: x86_64, aarch64 or riscv64" >&2; exit 2 ;;
esac
MAX_SMP=${MAX_SMP:-$(grep -c ^processor /proc/cpuinfo)}
AXVM=${AXVM:-axvm}
QEMU=${QEMU:-qemu-system-$arch}
if [ $list = 1 ]; then
    awk '/^\[.*\]/ { if (n != "" && g !~ /(^| )nodefault( |$)/) print n; n = substr($0, 2, index($0, "]") - 2); g = ""; next }
         /^groups[ \t]*=/ { g = $0; sub(/^[^=]*=[ \t]*/, "", g) }
         END { if (n != "" && g !~ /(^| )nodefault( |$)/) print n }' "$dir/unittests.cfg"
    exit 0
fi
mkdir -p "$logdir" || exit 2
env=$logdir/environ
printf 'TEST_DEVICE=0\n' > "$env"

# The entries as records of unit-separated fields: name file smp test_args qemu_params arch
# groups timeout check accel disabled_if.
records=$(awk -v US="$(printf '\037')" '
    function flush() { if (name != "") print name US f["file"] US f["smp"] US f["test_args"] US f["qemu_params"] US f["arch"] US f["groups"] US f["timeout"] US f["check"] US f["accel"] US f["disabled_if"] }
    /^[ \t]*#/ { next }
    /^\[.*\]/ { flush(); name = substr($0, 2, index($0, "]") - 2); split("", f); next }
    /^[a-z_]+[ \t]*=/ {
        key = $0; sub(/[ \t]*=.*/, "", key)
        val = $0; sub(/^[^=]*=[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
        if (val ~ /^'\''.*'\''$/ || val ~ /^".*"$/) val = substr(val, 2, length(val) - 2)
        f[key] = val
    }
    END { flush() }' "$dir/unittests.cfg")

result() {  # result NAME RESULT [REASON]: the entry's line (the summary counts them)
    if [ -n "${3:-}" ]; then echo "kut $target $1 $2 ($3)"; else echo "kut $target $1 $2"; fi
}

# from_code CODE: a test's own exit code as a result.
from_code() {
    case $1 in 0) echo PASS ;; 38) echo SKIP ;; *) echo FAIL ;; esac
}

wanted() {  # wanted NAME GROUPS: asked for by name, or in the default set
    if [ -n "$names" ]; then
        case " $names " in *" $1 "*) return 0 ;; *) return 1 ;; esac
    fi
    case " $2 " in *" nodefault "*) return 1 ;; esac
    return 0
}
names="$*"

IFS_SAVED=$IFS
printf '%s\n' "$records" | while IFS=$(printf '\037') read -r name file smp args qparams earch groups timeout check accel disabled; do
    IFS=$IFS_SAVED
    [ -n "$name" ] || continue
    wanted "$name" "$groups" || continue
    log=$logdir/$name.$target.log
    if [ -n "$earch" ] && [ "$earch" != "$kutarch" ]; then result "$name" SKIP "arch $earch"; continue; fi
    if [ "$accel" = tcg ]; then result "$name" SKIP "TCG only"; continue; fi
    if [ -n "$disabled" ]; then
        # The suite's own condition, a bash test on $TARGET (qemu, kvmtool): axvm is neither.
        if TARGET=$target eval "$disabled" 2>/dev/null; then result "$name" SKIP "disabled_if $disabled"; continue; fi
    fi
    missing=""
    for c in $check; do
        path=${c%%=*} want=${c#*=}
        [ -f "$path" ] && [ "$(cat "$path")" = "$want" ] || missing="$c"
    done
    if [ -n "$missing" ]; then result "$name" SKIP "host check $missing"; continue; fi
    [ -n "$smp" ] || smp=1
    smp=$(eval "echo $smp")
    # Memory: the entry's -m (MiB), else QEMU's default, 128 MiB.
    mem=128 extra="" prev=""
    for p in $qparams; do
        case $prev in
            -m) mem=${p%M} ;;
            -cpu) ;;
            *) case $p in -m|-cpu) ;; *) extra="$extra $p" ;; esac ;;
        esac
        prev=$p
    done
    t=${timeout:-90}; t=${t%s}
    t=$(awk -v t="$t" -v s="$scale" 'BEGIN { printf "%d", t * s }')
    if [ ! -f "$dir/$file" ]; then result "$name" FAIL "$file not built"; continue; fi
    if [ "$target" = axvm ]; then
        set -- boot --kernel "$dir/$file" --cmdline "$args" --vcpus "$smp" --memory "${mem}M" --timeout "$t"
        # x86: the environment as the multiboot module; riscv64: as the initrd of its Image
        # (the .flat files carry riscv's Image header); arm64: a raw binary.
        case $kutarch in x86_64|riscv64) set -- "$@" --initrd "$env" ;; *) set -- "$@" --raw ;; esac
        "$AXVM" "$@" > "$log" 2>&1
        status=$?
    else
        if [ "$kutarch" = x86_64 ]; then
            set -- -machine q35,accel=kvm -cpu host -device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4 \
                -device pci-testdev -global kvm-pit.lost_tick_policy=discard
        elif [ "$kutarch" = riscv64 ]; then
            set -- -machine virt,accel=kvm -cpu host -bios none -initrd "$env"
        else
            set -- -machine virt,gic-version=host,accel=kvm -cpu host
        fi
        # shellcheck disable=SC2086  # the entry's parameters, split as the suite splits them
        timeout "$t" "$QEMU" "$@" -nodefaults -display none -serial stdio -no-reboot -kernel "$dir/$file" \
            -append "$args" -smp "$smp" -m "$mem" $extra > "$log" 2>&1 < /dev/null
        status=$?
    fi
    exitline=$(tr -d '\r' < "$log" | grep -o 'EXIT: STATUS=[0-9]*' | tail -1)
    if [ -n "$exitline" ]; then
        result "$name" "$(from_code $(( ${exitline#EXIT: STATUS=} >> 1 )))"
    elif [ $status -eq 124 ] || [ $status -eq 143 ] || [ $status -eq 137 ]; then
        result "$name" TIMEOUT "$t s"
    elif [ "$kutarch" != x86_64 ]; then
        result "$name" FAIL "no EXIT line, status $status"
    elif [ "$target" = axvm ] && grep -q '^axvm: guest exit, code' "$log"; then
        result "$name" "$(from_code "$status")"
    elif [ "$target" = axvm ]; then
        result "$name" FAIL "axvm status $status: $(grep '^axvm: ' "$log" | head -1 | cut -c7-)"
    elif [ $((status & 1)) -eq 1 ]; then
        result "$name" "$(from_code $((status >> 1)))"
    else
        result "$name" FAIL "QEMU status $status"
    fi
done | tee "$logdir/results.$target"
awk -v t="$target" '{ n++; if ($4 == "PASS") p++; else if ($4 == "SKIP") s++; else f++ }
    END { printf "kut %s summary: %d passed, %d failed, %d skipped of %d\n", t, p, f, s, n }' "$logdir/results.$target"
! grep -q ' FAIL\| TIMEOUT' "$logdir/results.$target"
