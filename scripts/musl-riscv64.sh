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
# apt configuration is not touched. Idempotent: nothing happens when the library is built
# (the recipe's version is stamped beside it; a new recipe builds again).
#
# One change to musl 1.2.3: clock_gettime through the kernel's vDSO (__vdso_clock_gettime,
# version LINUX_4.15, as arch/riscv/kernel/vdso/vdso.lds.S exports it), which musl's riscv64
# port leaves commented out: otherwise every clock read is a system call, and axvm reads the
# clock twice per fault it serves (the latency histogram). Without the symbol musl falls back
# to the system call, as before.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/.build-static/riscv64/musl
recipe="musl 1.2.3, lp64, vDSO clock_gettime"
[ -f "$out/lib/libc.a" ] && [ -f "$out/include/stdio.h" ] && [ "$(cat "$out/recipe" 2>/dev/null)" = "$recipe" ] && exit 0
rm -rf "$out"
swift_bin=$(dirname "$(command -v swiftc)")
work=$(mktemp -d /tmp/axvm-musl.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
echo "deb-src http://deb.debian.org/debian bookworm main" > "$work/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
          -o Debug::NoLocking=1 -o APT::Sandbox::User=root -qq)
echo "musl-riscv64: fetching Debian's musl source package"
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only musl 2>&1 | grep -v "unsandboxed" || true)
orig=$(ls "$work"/musl_*.orig.tar.gz 2>/dev/null | head -1)
[ -n "$orig" ] || { echo "musl-riscv64: no musl source package came (apt-get source musl)" >&2; exit 1; }
tar -xzf "$orig" -C "$work"
src=$(ls -d "$work"/musl-*/ | head -1)
arch_h=$src/arch/riscv64/syscall_arch.h
grep -q '^/\* We don.t have a clock_gettime function.$' "$arch_h" \
    || { echo "musl-riscv64: $arch_h is not the one this script knows (musl 1.2.3's)" >&2; exit 1; }
sed -i -e 's|^/\* We don.t have a clock_gettime function.$|/* The kernel'"'"'s vDSO clock_gettime (scripts/musl-riscv64.sh). */|' \
    -e 's|^#define VDSO_CGT_SYM "__vdso_clock_gettime"$|#define VDSO_CGT_SYM "__vdso_clock_gettime"|' \
    -e 's|^#define VDSO_CGT_VER "LINUX_2.6" \*/$|#define VDSO_CGT_VER "LINUX_4.15"|' "$arch_h"
grep -q '^#define VDSO_CGT_VER "LINUX_4.15"$' "$arch_h" || { echo "musl-riscv64: could not turn the vDSO on in $arch_h" >&2; exit 1; }
echo "musl-riscv64: building $(basename "$src") for riscv64 lp64"
(cd "$src" && ./configure --target=riscv64-linux-musl --prefix="$out" --disable-shared \
    CC="$swift_bin/clang --target=riscv64-linux-gnu -march=rv64gc -mabi=lp64" \
    AR="$swift_bin/llvm-ar" RANLIB="$swift_bin/llvm-ranlib" > "$work/configure.log" 2>&1 \
    && make -j"$(nproc)" > "$work/make.log" 2>&1 && make install > "$work/install.log" 2>&1) \
    || { tail -30 "$work"/*.log >&2; echo "musl-riscv64: the build failed" >&2; exit 1; }
echo "$recipe" > "$out/recipe"
echo "musl-riscv64: $out/lib/libc.a ($recipe)"
