#!/usr/bin/env bash
# The project's test command (README, .ci/run): Embedded Swift build of the library, the
# library's package alone (its tests, documentation and an example consumer), the assembly guests, the static Embedded Swift axvm (aarch64, x86_64) against the SwiftPM
# one, the bare-metal hypervisors, a short fuzzing pass, every swift-testing test (plain and
# under ThreadSanitizer), then the two KVM rigs (kvm_amd; arm64 VHE and nVHE).
# With AXVM_REQUIRE_KVM=1 the KVM tests fail instead of skipping when KVM is unusable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/embedded-check.sh
scripts/check-library.sh  # the library's own package alone: its tests, DocC (warnings are errors), the example consumer
scripts/build-guests.sh
scripts/test-static.sh  # Embedded Swift static axvm (aarch64, x86_64, riscv64): same errors, same results
scripts/baremetal.sh check
scripts/fuzz.sh 20000  # short libFuzzer pass over every untrusted input (Fuzz/)
# Warnings are errors in the project's own modules (Sources/, Benchmarks/, Tests/ and the
# AxAddrSpace library).
swift build --build-tests -Xswiftc -warnings-as-errors
swift test --skip-build --no-parallel "$@"
# The same suite under ThreadSanitizer (its own build path): any report fails the run.
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" swift test --skip-build --sanitize=thread --scratch-path .build-tsan --no-parallel "$@"
# The KVM rigs (AXVM_SKIP_RIG=1 skips them): real kvm_amd with NPT under QEMU TCG, the guest
# suite and Linux on axvm; real arm64 KVM at EL2, VHE (-cpu max) and nVHE (-cpu cortex-a57),
# the AArch64 guest suite with the static Embedded Swift axvm; real RISC-V KVM (H extension,
# Sv57x4), the riscv64 guest suite and Linux (beside QEMU once) with the static musl axvm (the one
# scripts/test-static.sh built: AXVM_RIG_AXVM). With AXVM_KUT (kvm-unit-tests'
# tarball or checkout) the suite's x86 entries that pass on this machine's KVM run here first,
# and the rigs run theirs.
if [ -n "${AXVM_KUT:-}" ]; then scripts/kvm-unit-tests.sh ci "$AXVM_KUT"; fi
if [ "${AXVM_SKIP_RIG:-0}" != 1 ]; then
    scripts/kvm-rig.sh fetch && scripts/kvm-rig.sh build x86_64 && scripts/kvm-rig.sh test x86_64 || exit 1
    scripts/kvm-rig.sh fetch aarch64 && AXVM_RIG_AXVM=.build-static/aarch64/axvm scripts/kvm-rig.sh build aarch64 \
        && scripts/kvm-rig.sh test aarch64 both || exit 1
    scripts/kvm-rig.sh fetch riscv64 && AXVM_RIG_AXVM=.build-static/riscv64/axvm scripts/kvm-rig.sh build riscv64 \
        && scripts/kvm-rig.sh test riscv64 || exit 1
fi
