#!/usr/bin/env bash
# The C library of the static riscv64 axvm: musl, built from Debian's source package with the
# toolchain's clang for the lp64 (soft-float) calling convention.
#   scripts/musl-riscv64.sh   → .build-static/riscv64/musl/{include,lib}
# Why musl and lp64: Swift's Embedded riscv64 stdlib and its libswiftUnicodeDataTables.a are
# built for lp64, and Debian's riscv64 glibc (libc6-dev-riscv64-cross) only for lp64d; an
# executable must use one calling convention throughout (ld.lld refuses a mix). So everything
# is lp64 here: the Swift modules, CKVM, musl (-march=rv64gc: the FPU is still used inside
# functions, floats are only passed in integer registers) and libgcc from Debian's
# riscv64-unknown-elf multilib (rv64imac/lp64). Linux runs lp64 and lp64d programs alike.
# The source comes through a temporary apt source list (deb-src bookworm): the machine's own
# apt configuration is not touched. Idempotent: nothing happens when the library is built.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/.build-static/riscv64/musl
[ -f "$out/lib/libc.a" ] && [ -f "$out/include/stdio.h" ] && exit 0
swift_bin=$(dirname "$(command -v swiftc)")
work=$(mktemp -d /tmp/axvm-musl.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
echo "deb-src http://deb.debian.org/debian bookworm main" > "$work/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
          -o Debug::NoLocking=1 -qq)
echo "musl-riscv64: fetching Debian's musl source package"
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only musl 2>&1 | grep -v "unsandboxed" || true)
orig=$(ls "$work"/musl_*.orig.tar.gz 2>/dev/null | head -1)
[ -n "$orig" ] || { echo "musl-riscv64: no musl source package came (apt-get source musl)" >&2; exit 1; }
tar -xzf "$orig" -C "$work"
src=$(ls -d "$work"/musl-*/ | head -1)
echo "musl-riscv64: building $(basename "$src") for riscv64 lp64"
(cd "$src" && ./configure --target=riscv64-linux-musl --prefix="$out" --disable-shared \
    CC="$swift_bin/clang --target=riscv64-linux-gnu -march=rv64gc -mabi=lp64" \
    AR="$swift_bin/llvm-ar" RANLIB="$swift_bin/llvm-ranlib" > "$work/configure.log" 2>&1 \
    && make -j"$(nproc)" > "$work/make.log" 2>&1 && make install > "$work/install.log" 2>&1) \
    || { tail -30 "$work"/*.log >&2; echo "musl-riscv64: the build failed" >&2; exit 1; }
echo "musl-riscv64: $out/lib/libc.a"
