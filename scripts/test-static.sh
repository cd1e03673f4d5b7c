#!/usr/bin/env bash
# The Embedded Swift builds of axvm (scripts/build-static.sh) against the SwiftPM one:
# - the static binaries build (aarch64 for arm64 hosts and the arm64 rig, x86_64, riscv64 for
#   RISC-V hosts and the riscv64 rig: musl and the lp64 convention, scripts/musl-riscv64.sh);
# - the static x86_64 axvm runs memtest on this machine's KVM lazily and populated with the
#   same checksum as the SwiftPM axvm (with AXVM_REQUIRE_KVM=1 a KVM failure fails);
# - bad command lines get the same first error line and exit status from all front ends
#   (the aarch64 and riscv64 ones under qemu-user when it is installed): all run the one
#   command line of Sources/AxVMM/CommandLine (option table, parser, validation);
# - every option of every subcommand reaches the configuration the runner receives, in the
#   shared parser and in the static x86_64 build (CommandOptionTests with AXVM_STATIC_AXVM:
#   the static axvm's --print-config against the parser's), and the aarch64 and riscv64
#   builds resolve the same configurations under qemu;
# - the static axvm's own memory beside a 1 GiB lazy guest is under 5 MiB (SwiftPM's shown);
# - scripts/install.sh installs the static axvm naming this commit, the manual and the
#   shell completions, which complete.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-static.sh aarch64
scripts/build-static.sh x86_64
scripts/build-static.sh riscv64
# AXVM_SCRATCH: the SwiftPM scratch path (default .build).
scratch=${AXVM_SCRATCH:-.build}
swift build --scratch-path "$scratch" --product axvm > /dev/null
ref=$scratch/debug/axvm
x86=.build-static/x86_64/axvm
arm=.build-static/aarch64/axvm
rv=.build-static/riscv64/axvm
fail=0
# The first line of stderr, without swift-argument-parser's hints ("Did you mean …",
# "Please provide one of …"), and the exit status.
first_error() { local st=0; "$@" 2>/tmp/static-err >/dev/null || st=$?; echo "$(head -1 /tmp/static-err | sed 's/\. \(Did you mean\|Please provide\).*//') [exit $st]"; }
cases=(
    "run guests/build/memtest.bin --memory 5M1"
    "run guests/build/memtest.bin --memory 1M"
    "run guests/build/memtest.bin --bogus"
    "run"
    "run /nonexistent.bin"
    "run guests/build/memtest.bin --vcpus 100"
    "run guests/build/memtest.bin --timeout 1e9"
    "run guests/build/memtest.bin --order up"
    "run guests/build/memtest.bin --fault-around 3K"
    "run guests/build/memtest.bin --stats-json /dev/full"
    "run guests/build/memtest.bin --vcpus -1"
    "run guests/build/memtest.bin --memory -1"
    "run guests/build/memtest.bin --stride -1"
    "run guests/build/memtest.bin --test-size 0"
    "run guests/build/memtest.bin --memory 16M --test-size 4K --order strided"
    "run guests/build/memtest.bin --order 1"
    "boot"
    "boot --kernel /nonexistent"
    "boot --kernel guests/build/hello.bin"
    "boot --kernel guests/build/hello.bin --memory -1"
    "boot --kernel guests/build/hello.bin --timeout -1"
    "boot --kernel guests/build/hello.bin --stats-json guests/build/hello.bin"
    "boot --kernel guests/build/hello.bin --vcpus 0"
)
runners=("$x86")
# The other architectures' builds under qemu-user (the same package installs both).
emulated=()
if command -v qemu-aarch64-static > /dev/null; then emulated+=("qemu-aarch64-static $arm"); fi
if command -v qemu-riscv64-static > /dev/null; then emulated+=("qemu-riscv64-static $rv"); fi
runners+=("${emulated[@]}")
for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    want=$(first_error $ref $c)
    for r in "${runners[@]}"; do
        # A kernel's contents are judged by the host's platform (bzImage or arm64 Image).
        [[ $c == "boot --kernel guests/build/hello.bin" && $r != "$x86" ]] && continue
        # shellcheck disable=SC2086
        got=$(first_error $r $c)
        if [ "$got" != "$want" ]; then
            echo "static: FAIL: axvm $c: SwiftPM says \"$want\", $r says \"$got\""
            fail=1
        fi
    done
done
echo "static: ${#cases[@]} bad command lines, same error and status from ${#runners[@]} Embedded front end(s) and the SwiftPM one"

# Every option reaches the runner: the test suite's sample command lines, one per option and
# subcommand, resolved by the shared parser and by the static x86_64 axvm (--print-config).
swift build --build-tests --scratch-path "$scratch" > /dev/null
if AXVM_STATIC_AXVM=$PWD/$x86 swift test --skip-build --scratch-path "$scratch" --filter CommandOptionTests > /tmp/static-options 2>&1 \
    && grep -q 'Suite CommandOptionTests passed' /tmp/static-options; then
    echo "static: every option of every subcommand reaches the runner's configuration, SwiftPM and static x86_64 alike"
else
    echo "static: FAIL: CommandOptionTests against $x86:"; grep -E '✘|Expectation failed' /tmp/static-options | head -20
    fail=1
fi
# The aarch64 and riscv64 builds under qemu: the same configurations (boot left out: its
# default kernel command line is the host architecture's).
if [ ${#emulated[@]} -gt 0 ]; then
    configs=(
        "check --kvm /dev/kvm-x"
        "run g.bin --memory 1G --populate --fault-around 2M --timeout none --order strided --stride 3 --seed 9 --test-size 8M --sparse --vcpus 2 --memtest-mode overlap --fault-threads 3 --max-resident 512M --stats --stats-json j --fault-map m.svg --kvm /dev/k --snapshot s --snapshot-on x --snapshot-after 2 --snapshot-and-exit"
        "restore d --populate --fault-around 64K --timeout 5 --fault-threads 2 --marker m --quiet --stats --stats-json j --kvm /dev/k --snapshot s --snapshot-diff"
    )
    for r in "${emulated[@]}"; do
        for c in "${configs[@]}"; do
            # shellcheck disable=SC2086
            if [ "$($ref $c --print-config)" != "$($r $c --print-config)" ]; then
                echo "static: FAIL: axvm $c --print-config: $r and SwiftPM differ"
                fail=1
            fi
        done
    done
    echo "static: ${#configs[@]} full command lines resolve alike on ${#emulated[@]} emulated architecture(s)"
fi

kvm_usable=0
$x86 check > /tmp/static-check 2>&1 && kvm_usable=1
if [ $kvm_usable = 1 ]; then
    for mode in --lazy --populate; do
        a=$($ref run guests/build/memtest.bin --memory 32M --order random --seed 5 $mode --stats | grep '^memtest: .* pages')
        b=$($x86 run guests/build/memtest.bin --memory 32M --order random --seed 5 $mode --stats | grep '^memtest: .* pages')
        if [ "$a" != "$b" ] || ! grep -q 'mismatches 0$' <<< "$b"; then
            echo "static: FAIL: memtest $mode: SwiftPM \"$a\", static \"$b\""
            fail=1
        else
            echo "static: memtest 32M random $mode: $b (same as SwiftPM)"
        fi
    done
    # The VMM's own memory (VmRSS - RssShmem) beside a 1 GiB lazy guest: the static build is
    # the one to copy to a host, and its overhead must stay under 5 MiB.
    for b in "$ref" "$x86"; do
        $b run guests/build/memtest.bin --memory 1G --test-size 64M --sparse --stats-json /tmp/static-stats.json > /dev/null
        overhead=$(sed -n 's/^ *"vmm_overhead_bytes": *\([0-9]*\).*/\1/p' /tmp/static-stats.json)
        echo "static: VMM overhead, 1 GiB lazy guest: $b $(awk -v b="$overhead" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
    done
    if [ -z "$overhead" ] || [ "$overhead" -ge $((5 << 20)) ]; then
        echo "static: FAIL: the static axvm's VMM overhead is ${overhead:-unknown} bytes, not under 5 MiB"
        fail=1
    fi
elif [ "${AXVM_REQUIRE_KVM:-0}" = 1 ]; then
    echo "static: FAIL: AXVM_REQUIRE_KVM=1 but the static axvm cannot use KVM:"; cat /tmp/static-check
    fail=1
else
    echo "static: KVM not usable here: the run cases are skipped"
fi
# The install step (scripts/install.sh): the static binary naming this commit, the manual
# with its EXIT STATUS table, bash completions that complete options and their values.
prefix=$(mktemp -d)
AXVM_SCRATCH=$scratch scripts/install.sh --prefix "$prefix" --config debug > /dev/null
commit=$(git describe --always --dirty --abbrev=12 --exclude '*' 2>/dev/null || echo unknown)
version=$("$prefix/bin/axvm" --version)
[ "$version" = "axvm commit $commit (Embedded static build)" ] || { echo "static: FAIL: installed axvm --version says \"$version\", commit $commit"; fail=1; }
awk '/^\.Sh "EXIT STATUS"/ { s = 1 } s && /^  124 / { found = 1 } END { exit !found }' "$prefix/share/man/man1/axvm.1" \
    || { echo "static: FAIL: the installed manual has no EXIT STATUS table"; fail=1; }
if command -v groff > /dev/null && [ -n "$(groff -mandoc -Tutf8 -ww -z "$prefix/share/man/man1/axvm.1" 2>&1)" ]; then
    echo "static: FAIL: groff warns about the installed manual:"; groff -mandoc -Tutf8 -ww -z "$prefix/share/man/man1/axvm.1" 2>&1 | head -5
    fail=1
fi
complete_words() {
    bash -O extglob -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        _axvm axvm "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf "%s\n" "${COMPREPLY[@]}"' _ \
        "$prefix/share/bash-completion/completions/axvm" "$@"
}
[ "$(complete_words axvm run x --fault-a)" = --fault-around ] && [ "$(complete_words axvm run x --order '' | tr '\n' ' ')" = "sequential random strided " ] \
    || { echo "static: FAIL: the installed bash completion does not complete 'axvm run x --fault-a' or --order's values"; fail=1; }
for f in share/zsh/site-functions/_axvm share/fish/vendor_completions.d/axvm.fish; do
    [ -s "$prefix/$f" ] || { echo "static: FAIL: $f not installed"; fail=1; }
done
rm -rf "$prefix"
echo "static: install: $version, manual with exit statuses, bash/zsh/fish completions"
exit $fail
