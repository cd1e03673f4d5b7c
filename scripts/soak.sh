#!/usr/bin/env bash
# Long runs that look for what the ordinary tests are too short to hit.
#
#   scripts/soak.sh model SEED [STEPS]   the library's model-based property test
#                                        (PropertyTests.randomSequencesAgreeWithModel) with
#                                        STEPS operations per run (default 100000) from SEED;
#                                        AXVM_MODEL_FORMATS=ept,npt,... limits the formats;
#                                        built -c release (3x the debug speed; traps and
#                                        #expect are the same), AXVM_SOAK_CONFIG=debug for debug
#   scripts/soak.sh vms N MINUTES        N lazy 256 MiB VMs at a time on KVM for MINUTES:
#                                        memtest in random order with a fresh seed each run
#                                        (fault-around 4K, 64K or 2M), retouch.bin one run in
#                                        four; every run must exit 0 and report 0 memtest
#                                        mismatches and 0 residency mismatches
#
# Both build into .build-soak/ (the model soak into .build-soak/library) and exit non-zero on any failure (vms also when KVM is not
# usable here), printing how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=.build-soak

usage() {
    echo "usage: scripts/soak.sh model SEED [STEPS] | scripts/soak.sh vms N MINUTES" >&2
    exit 2
}
number() { [[ ${1:-} =~ ^[0-9]+$ ]] || usage; }

# swift build with its output in $scratch/build.log, shown only on failure.
build() {
    mkdir -p "$scratch"
    echo "swift build $* (log in $scratch/build.log)"
    swift build --scratch-path "$scratch" "$@" >"$scratch/build.log" 2>&1 || {
        grep -E 'error' "$scratch/build.log" | head -20 >&2
        echo "swift build failed (log: $scratch/build.log)" >&2
        return 1
    }
}

model() {
    local seed=$1 steps=${2:-100000}
    number "$seed"
    number "$steps"
    export AXVM_MODEL_SEED=$seed AXVM_MODEL_STEPS=$steps
    local formats=${AXVM_MODEL_FORMATS:-all} config=${AXVM_SOAK_CONFIG:-release}
    echo "model soak: seed $seed, $steps steps per run, formats $formats, $config build"
    local f
    for f in $(tr , " " <<<"${AXVM_MODEL_FORMATS:-}"); do
        # A misspelt format would silently skip every run.
        [[ " ept npt stage2L3 stage2L4 sv39x4 sv48x4 " == *" $f "* ]] || {
            echo "unknown format $f in AXVM_MODEL_FORMATS (ept npt stage2L3 stage2L4 sv39x4 sv48x4)" >&2
            return 2
        }
    done
    # The library's own package (AxAddrSpace/), in its own build directory.
    local scratch=$scratch/library
    build --package-path AxAddrSpace -c "$config" --build-tests
    local start=$EPOCHREALTIME rc=0
    swift test --package-path AxAddrSpace -c "$config" --scratch-path "$scratch" --skip-build --filter randomSequencesAgreeWithModel || rc=$?
    local secs
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
    echo
    echo "model soak: seed $seed, $steps steps per run, formats $formats: $( ((rc == 0)) && echo passed || echo FAILED) in ${secs} s"
    if ((rc != 0)); then
        echo "reproduce: AXVM_MODEL_SEED=$seed AXVM_MODEL_STEPS=$steps AXVM_MODEL_FORMATS=${AXVM_MODEL_FORMATS:-} swift test --package-path AxAddrSpace -c $config --filter randomSequencesAgreeWithModel"
    fi
    return $rc
}

# The value of a top-level number field in axvm's --stats-json output (one field a line,
# Sources/AxVMM/StatsFormat.swift); empty if the field is missing.
field() { sed -n "s/^ *\"$1\": *\([0-9-][0-9]*\),\{0,1\}$/\1/p" "$2" | head -1; }
count() { local v; v=$(field "$1" "$2"); echo "${v:-0}"; }

vms() {
    local n=$1 minutes=$2
    number "$n"
    number "$minutes"
    ((n > 0)) || usage
    # Fail early and plainly where KVM cannot work; `axvm check` below says why in detail.
    if [[ ! -e /dev/kvm ]]; then
        echo "vms soak: /dev/kvm does not exist: KVM is not available on this host" >&2
        return 1
    fi
    if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
        echo "vms soak: no read/write permission on /dev/kvm (add the user to the kvm group)" >&2
        return 1
    fi
    scripts/build-guests.sh
    build -c release --product axvm
    local axvm=$scratch/release/axvm
    if ! "$axvm" check >"$scratch/check.log" 2>&1; then
        cat "$scratch/check.log" >&2
        echo "vms soak: KVM or userfaultfd is not usable here (axvm check failed)" >&2
        return 1
    fi

    local work=$scratch/vms
    rm -rf "$work"
    mkdir -p "$work"
    local start=$EPOCHREALTIME deadline=$((SECONDS + minutes * 60))
    local runs=0 retouches=0 failures=0 faults=0 touched=0 mapped=0
    local -A cmdline=()
    local around=(4K 4K 64K 2M)

    # Whatever we started stops with us.
    trap 'for p in "${!cmdline[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

    launch() {
        local i=$runs guest=memtest seed=$(( (RANDOM << 15 | RANDOM) + 1 ))
        ((RANDOM % 4 == 0)) && guest=retouch retouches=$((retouches + 1))
        local args=(run "guests/build/$guest.bin" --memory 256M --order random --seed "$seed"
            --fault-around "${around[RANDOM % 4]}" --timeout 300 --stats-json "$work/$i.json")
        "$axvm" "${args[@]}" >"$work/$i.log" 2>&1 &
        cmdline[$!]="$i $axvm ${args[*]}"
        runs=$((runs + 1))
    }

    # One finished run: exit status 0, its JSON present with 0 memtest and 0 residency
    # mismatches; adds its counts to the totals.
    reap() {
        local pid=$1 status=$2
        local i=${cmdline[$pid]%% *} cmd=${cmdline[$pid]#* }
        unset "cmdline[$pid]"
        local json=$work/$i.json problem=
        if ((status != 0)); then
            problem="exit status $status"
        elif [[ ! -s $json ]]; then
            problem="no statistics JSON"
        else
            local residency mismatches
            residency=$(field residency_mismatches "$json")
            mismatches=$(field mismatches "$json")
            if [[ -z $residency ]]; then
                problem="JSON has no residency_mismatches"
            elif ((residency != 0)); then
                problem="$residency residency mismatches (AddrSpace vs mincore)"
            elif [[ -n $mismatches ]] && ((mismatches != 0)); then
                problem="$mismatches memtest mismatches"
            fi
            faults=$((faults + $(count faults "$json")))
            touched=$((touched + $(count pages_touched "$json")))
            mapped=$((mapped + $(count pages_mapped_by_faults "$json")))
        fi
        if [[ -n $problem ]]; then
            failures=$((failures + 1))
            echo "FAILED run $i: $problem" >&2
            echo "  reproduce: $cmd" >&2
            sed 's/^/  | /' "$work/$i.log" | tail -20 >&2
        fi
    }

    echo "vms soak: $n concurrent lazy 256 MiB VMs for $minutes min (logs in $work)"
    while ((SECONDS < deadline)) || ((${#cmdline[@]} > 0)); do
        while ((SECONDS < deadline && ${#cmdline[@]} < n)); do launch; done
        local pid status=0
        wait -n -p pid "${!cmdline[@]}" || status=$?
        [[ -n ${pid:-} && -n ${cmdline[$pid]:-} ]] && reap "$pid" "$status"
        pid=
    done
    trap - EXIT
    local secs
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "vms soak: $runs runs ($((runs - retouches)) memtest, $retouches retouch), $failures failures, $faults faults, $touched pages touched by memtest, $mapped pages mapped by faults, ${secs} s"
    ((failures == 0))
}

case ${1:-} in
model) (($# == 2 || $# == 3)) || usage; model "$2" "${3:-}" ;;
vms) (($# == 3)) || usage; vms "$2" "$3" ;;
*) usage ;;
esac
