#!/usr/bin/env bash
# The Embedded Swift builds of axvm (scripts/build-static.sh) against the SwiftPM one:
# - both static binaries build (aarch64 for arm64 hosts and the arm64 rig, x86_64);
# - the static x86_64 axvm runs memtest on this machine's KVM lazily and populated with the
#   same checksum as the SwiftPM axvm (with AXVM_REQUIRE_KVM=1 a KVM failure fails);
# - bad command lines get the same first error line and exit status from all front ends
#   (the aarch64 one under qemu-aarch64-static when it is installed): the option values
#   and validation are shared code.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-static.sh aarch64
scripts/build-static.sh x86_64
swift build --product axvm > /dev/null
ref=.build/debug/axvm
x86=.build-static/x86_64/axvm
arm=.build-static/aarch64/axvm
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
if command -v qemu-aarch64-static > /dev/null; then runners+=("qemu-aarch64-static $arm"); fi
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
elif [ "${AXVM_REQUIRE_KVM:-0}" = 1 ]; then
    echo "static: FAIL: AXVM_REQUIRE_KVM=1 but the static axvm cannot use KVM:"; cat /tmp/static-check
    fail=1
else
    echo "static: KVM not usable here: the run cases are skipped"
fi
exit $fail
