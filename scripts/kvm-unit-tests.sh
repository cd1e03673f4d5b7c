#!/usr/bin/env bash
# kvm-unit-tests, the KVM maintainers' suite, built from a tarball or checkout and run on axvm
# (and on QEMU, for comparison) on this host's KVM. docs/kvm-unit-tests.md.
#
#   scripts/kvm-unit-tests.sh build SOURCE [ARCH]     x86_64 (gcc), aarch64 (gcc-aarch64-linux-gnu) or riscv64 (gcc-riscv64-linux-gnu)
#                                                    into .build-kut/ARCH; SOURCE: a .tar.gz whose
#                                                    top folder is kvm-unit-tests/, or a checkout
#   scripts/kvm-unit-tests.sh run [-t axvm|qemu] [NAME...]   the host's arch; kut-run.sh's options
#   scripts/kvm-unit-tests.sh ci SOURCE             build, then the entries that pass on this
#                                                    machine's KVM (kvm_pvm: the list below)
# AXVM: the axvm binary (default .build/debug/axvm, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

die() { echo "kvm-unit-tests: $*" >&2; exit 1; }

host_arch() { case $(uname -m) in x86_64) echo x86_64 ;; aarch64) echo aarch64 ;; *) die "host $(uname -m): x86_64 or aarch64" ;; esac; }

# The entries CI runs here, on kvm_pvm (which emulates guest kernel mode: many timer, APIC and
# exit-heavy tests run too slowly or not at all there, on QEMU as on axvm; the rigs run the
# rest on kvm_amd and arm64 KVM).
KVM_PVM_ENTRIES="smptest smptest3 idt_test setjmp rmap_chain vmexit_cpuid"

build() {
    local src=${1:-} arch=${2:-$(host_arch)} out work
    [ -n "$src" ] || die "build: name the suite's tarball or checkout"
    out=$repo/.build-kut/$arch
    work=$out/src
    rm -rf "$work" && mkdir -p "$work"
    if [ -d "$src" ]; then
        cp -a "$src/." "$work/"
    elif [ -f "$src" ]; then
        tar -xzf "$src" -C "$work" --strip-components=1 || die "$src: not a tar.gz of kvm-unit-tests/"
    else
        die "$src: no such file or directory"
    fi
    [ -x "$work/configure" ] || die "$src: no configure script at its top (not kvm-unit-tests?)"
    local -a conf=()
    case $arch in
        x86_64) command -v gcc > /dev/null || die "gcc missing: run scripts/setup.sh" ;;
        aarch64)
            if [ "$(host_arch)" != aarch64 ]; then
                command -v aarch64-linux-gnu-gcc > /dev/null || die "aarch64-linux-gnu-gcc missing: apt-get install gcc-aarch64-linux-gnu"
                conf=(--cross-prefix=aarch64-linux-gnu-)
            fi
            conf+=(--arch=arm64) ;;
        riscv64)
            command -v riscv64-linux-gnu-gcc > /dev/null || die "riscv64-linux-gnu-gcc missing: run scripts/setup.sh"
            conf=(--arch=riscv64 --cross-prefix=riscv64-linux-gnu-) ;;
        *) die "build: arch $arch: x86_64, aarch64 or riscv64" ;;
    esac
    local t0=$SECONDS
    (cd "$work" && ./configure "${conf[@]}" > "$out/configure.log" 2>&1 && make -j"$(nproc)" > "$out/make.log" 2>&1) \
        || { tail -20 "$out/make.log" 2>/dev/null || tail -20 "$out/configure.log"; die "build failed (logs in $out)"; }
    local dir=x86
    [ "$arch" = aarch64 ] && dir=arm
    [ "$arch" = riscv64 ] && dir=riscv
    rm -rf "${out:?}/tests" && mkdir -p "$out/tests"
    cp "$work/$dir"/*.flat "$work/$dir/unittests.cfg" "$out/tests/"
    echo "kvm-unit-tests: $(ls "$out/tests"/*.flat | wc -l) tests for $arch in $out/tests ($((SECONDS - t0)) s)"
}

axvm_binary() {
    if [ -n "${AXVM:-}" ]; then echo "$AXVM"; return; fi
    [ -x .build/debug/axvm ] || swift build --product axvm > /dev/null
    echo "$repo/.build/debug/axvm"
}

run() {
    local arch tests
    arch=$(host_arch)
    tests=$repo/.build-kut/$arch/tests
    [ -f "$tests/unittests.cfg" ] || die "no built suite in $tests: run $0 build SOURCE"
    local -a opts=()
    while [ $# -ge 2 ] && [[ $1 == -* ]]; do opts+=("$1" "$2"); shift 2; done
    AXVM=$(axvm_binary) scripts/kut-run.sh -o "$repo/.build-kut/$arch/logs" "${opts[@]}" "$tests" "$@"
}

ci() {
    build "${1:-}"
    if ! [ -r /dev/kvm ] && [ "${AXVM_REQUIRE_KVM:-0}" != 1 ]; then
        echo "kvm-unit-tests: no usable /dev/kvm here: the tests are left to the rigs"
        return 0
    fi
    local arch names=""
    arch=$(host_arch)
    [ "$arch" = x86_64 ] && names=$KVM_PVM_ENTRIES
    # shellcheck disable=SC2086  # the list's names, one argument each
    AXVM=$(axvm_binary) scripts/kut-run.sh -o "$repo/.build-kut/$arch/logs" "$repo/.build-kut/$arch/tests" $names
}

verb=${1:-}
[ $# -gt 0 ] && shift
case $verb in
    build) build "$@" ;;
    run) run "$@" ;;
    ci) ci "$@" ;;
    *) echo "usage: $0 build SOURCE [x86_64|aarch64] | run [-t axvm|qemu] [NAME...] | ci SOURCE" >&2; exit 2 ;;
esac
