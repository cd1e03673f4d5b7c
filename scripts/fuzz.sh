#!/usr/bin/env bash
# libFuzzer targets in Fuzz/, one per untrusted input: the four nested-fault decoders
# (EPTViolation, NPTFault, Stage2Abort, GStageFault), the guest image header (GuestImage),
# the bzImage header and Linux boot plan (BzImage), the arm64 Image header, its gzip inflater
# and boot plan (ArmImage), the snapshot decoder with a restore's checks before its VM
# (Snapshot), the split virtqueue parser over hostile rings (Virtqueue), the multiboot kernel
# parser and its boot plan (Multiboot) and the command line's size parser
# (ByteSize). Builds them with -sanitize=fuzzer,address
# into .build-fuzz/, runs each for RUNS executions from its seeds in Fuzz/corpus/<target>/
# (copied to .build-fuzz/run/<target>/corpus, so new inputs stay out of git), and prints
# per target executions, time and "clean" or the crash with its reproducer (crashing inputs
# are kept in .build-fuzz/crashes/<target>/).
#
#   scripts/fuzz.sh [RUNS] [TARGET...]    RUNS defaults to 1000000; TARGETs to all
#
# Exits non-zero if a target fails to build or any run crashes. AXVM_FUZZ_STRICT=1 also
# fails on deviations a target knows about and tolerates (see Fuzz/ByteSizeFuzz.swift).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-1000000}
[[ $runs =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [RUNS] [TARGET...]" >&2; exit 2; }
shift $(( $# > 0 ? 1 : 0 ))
all=(EPTViolation NPTFault Stage2Abort GStageFault ByteSize GuestImage BzImage ArmImage Snapshot Virtqueue Multiboot)
targets=("$@")
(( ${#targets[@]} > 0 )) || targets=("${all[@]}")

out=.build-fuzz
mkdir -p "$out/bin" "$out/run"
# -Onone: quick to build; the runs are counted, not timed, and traps are the same as with -O.
flags=(-sanitize=fuzzer,address -parse-as-library -g -Onone -use-ld=lld)
library=$(find AxAddrSpace/Sources/AxAddrSpace -name '*.swift' | sort)

# Inputs are fixed-size records for the decoders: longer ones would only waste runs.
max_len() {
    case $1 in
    EPTViolation | NPTFault) echo 16 ;;
    Stage2Abort | GStageFault) echo 24 ;;
    ByteSize) echo 64 ;;
    BzImage) echo 512 ;;  # 16 bytes of parameters and the setup header (0x9f bytes), with room
    ArmImage) echo 8192 ;;  # 16 bytes of parameters, the 64-byte header, a PE section table, deflate data
    Snapshot) echo 65536 ;;  # 12 bytes of lengths, a 4 MiB memtest guest's state (~20 KB) and its memory file's first pages
    Virtqueue) echo 65568 ;;  # 32 bytes of parameters and ring addresses, then the 64 KiB guest RAM
    Multiboot) echo 16384 ;;  # 8 bytes of parameters, an ELF32 kernel (the header within its first 8 KiB)
    *) echo 4096 ;;
    esac
}

# True if $1 is missing or older than any of the other files.
stale() {
    local bin=$1 f
    shift
    [[ -e $bin ]] || return 0
    for f in "$@"; do [[ $f -nt $bin ]] && return 0; done
    return 1
}

# GuestImage, BzImage and ArmImage need AxVMM, which needs KVM, CKVM and swift-system: SwiftPM builds that
# module graph instrumented, and the target links the objects of every module it built
# (each Swift module's objects from its `sources` list, so a deleted file leaves no stale
# object behind; C modules' *.c.o).
build_axvmm() {
    swift build --scratch-path "$out" --target AxVMM -Xswiftc -sanitize=fuzzer,address >"$out/axvmm-build.log" 2>&1 || {
        grep -E 'error:' "$out/axvmm-build.log" | head -20 >&2
        return 1
    }
    local dir=$out/debug src
    objects=() mapflags=()
    for d in "$dir"/*.build; do
        if [[ -f $d/sources ]]; then
            while read -r src; do objects+=("$d/$(basename "$src").o"); done <"$d/sources"
        else
            for o in "$d"/*.c.o; do [[ -e $o ]] && objects+=("$o"); done
        fi
        [[ -f $d/module.modulemap ]] && mapflags+=(-Xcc "-fmodule-map-file=$d/module.modulemap")
    done
    for m in "$out"/checkouts/*/Sources/*/include/module.modulemap; do
        [[ -e $m ]] && mapflags+=(-Xcc "-fmodule-map-file=$m")
    done
    return 0
}

build() {
    local t=$1 bin=$out/bin/$1 log=$out/bin/$1.log
    local sources=(Fuzz/Support/FuzzInput.swift "Fuzz/${t}Fuzz.swift")
    local extra=()
    case $t in
    EPTViolation | NPTFault | Stage2Abort | GStageFault)
        # One module: the library's sources and the target, no package build needed.
        sources+=(Fuzz/Support/NestedFaultChecks.swift $library) ;;
    ByteSize)
        sources+=(Sources/AxVMM/ByteSize.swift) ;;
    GuestImage | BzImage | ArmImage | Snapshot | Virtqueue | Multiboot)
        build_axvmm || { echo "$t: swift build of AxVMM failed (log: $out/axvmm-build.log)" >&2; return 1; }
        extra=(-I "$out/debug/Modules" "${mapflags[@]}" "${objects[@]}") ;;
    *)
        echo "unknown target $t (targets: ${all[*]})" >&2
        return 1 ;;
    esac
    if [[ $t == GuestImage || $t == BzImage || $t == ArmImage || $t == Snapshot || $t == Virtqueue || $t == Multiboot ]] || stale "$bin" "${sources[@]}" scripts/fuzz.sh; then
        swiftc "${flags[@]}" -module-name "${t}Fuzz" "${sources[@]}" "${extra[@]}" -o "$bin" >"$log" 2>&1 || {
            grep -E 'error' "$log" | head -20 >&2
            echo "$t: build failed (log: $log)" >&2
            return 1
        }
    fi
}

failed=0
results=()
for t in "${targets[@]}"; do
    echo "building $t" >&2
    if ! build "$t"; then
        results+=("$(printf '%-13s %12s %9s   BUILD FAILED' "$t" - -)")
        failed=1
        continue
    fi
    run=$out/run/$t crashes=$out/crashes/$t
    rm -rf "$run"
    mkdir -p "$run/corpus" "$crashes"
    cp Fuzz/corpus/"$t"/* "$run/corpus/"
    echo "fuzzing $t: $runs runs" >&2
    start=$EPOCHREALTIME
    rc=0
    "$out/bin/$t" -runs="$runs" -max_len="$(max_len "$t")" -timeout=20 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$run/corpus" >"$run/log" 2>&1 || rc=$?
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$run/log" | tail -1)
    if [[ $rc == 0 ]]; then
        results+=("$(printf '%-13s %12s %8.1fs   clean' "$t" "${execs:-?}" "$secs")")
    else
        failed=1
        artifact=$(ls -t "$crashes"/crash-* "$crashes"/timeout-* "$crashes"/oom-* "$crashes"/leak-* 2>/dev/null | head -1 || true)
        what=$(grep -m1 -E 'invariant broken|Fatal error|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)' "$run/log" || echo "exit status $rc")
        results+=("$(printf '%-13s %12s %8.1fs   CRASH: %s' "$t" "${execs:-?}" "$secs" "$what")")
        local_env=$([[ ${AXVM_FUZZ_STRICT:-} == 1 ]] && echo "AXVM_FUZZ_STRICT=1 " || true)
        results+=("              input: ${artifact:-none saved} (reproduce: $local_env$out/bin/$t ${artifact:-<input>}; log: $run/log)")
    fi
done

printf '%-13s %12s %9s   %s\n' target executions time result
printf '%s\n' "${results[@]}"
exit $failed
