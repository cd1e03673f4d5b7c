#!/usr/bin/env bash
# Builds axvm as one static Linux executable with Embedded Swift (no Swift runtime to copy):
#   scripts/build-static.sh aarch64   → .build-static/aarch64/axvm  (for arm64 KVM hosts and the arm64 rig)
#   scripts/build-static.sh x86_64    → .build-static/x86_64/axvm
#   scripts/build-static.sh riscv64   → .build-static/riscv64/axvm  (for RISC-V KVM hosts and the riscv64 rig)
# There is no aarch64 Linux Swift runtime for this toolchain, but Embedded Swift needs none:
# the modules (AxAddrSpace, KVM, AxVMM, the front end in Embedded/axvm) are compiled for the
# bare-metal triple with Linux's headers, and clang links them against static glibc.
# The arm64 rig runs it (docs/rigs.md). Needs libc6-dev:ARCH (scripts/setup.sh).
# riscv64 links musl instead, everything in the lp64 calling convention (scripts/musl-riscv64.sh
# says why), with Linux's riscv64 headers from linux-libc-dev-riscv64-cross and libgcc from
# gcc-riscv64-unknown-elf.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-aarch64}
case "$arch" in
    aarch64) swift_target=aarch64-none-none-elf; c_target=aarch64-linux-gnu ;;
    x86_64) swift_target=x86_64-unknown-none-elf; c_target=x86_64-linux-gnu ;;
    riscv64) swift_target=riscv64-none-none-eabi; c_target=riscv64-linux-gnu ;;
    *) echo "build-static: unknown architecture $arch (aarch64, x86_64 or riscv64)" >&2; exit 2 ;;
esac
if [ "$arch" = riscv64 ]; then
    libgcc=/usr/lib/gcc/riscv64-unknown-elf/12.2.0/rv64imac/lp64/libgcc.a
    [ -f "$libgcc" ] || libgcc=$(ls /usr/lib/gcc/riscv64-unknown-elf/*/rv64imac/lp64/libgcc.a 2>/dev/null | head -1)
    [ -n "$libgcc" ] && [ -f "$libgcc" ] || { echo "build-static: no rv64imac/lp64 libgcc.a: install gcc-riscv64-unknown-elf (scripts/setup.sh)" >&2; exit 2; }
    [ -d /usr/riscv64-linux-gnu/include/asm ] || { echo "build-static: /usr/riscv64-linux-gnu/include/asm missing: install linux-libc-dev-riscv64-cross (scripts/setup.sh)" >&2; exit 2; }
    scripts/musl-riscv64.sh
    musl=$PWD/.build-static/riscv64/musl
    # The headers: musl's, then Linux's riscv64 ones (asm/kvm.h); nothing of the build machine's.
    c_includes=(-nostdinc -isystem "$musl/include" -isystem /usr/riscv64-linux-gnu/include)
    abi=(-march=rv64gc -mabi=lp64)
else
    [ -d "/usr/include/$c_target" ] || { echo "build-static: /usr/include/$c_target missing: install libc6-dev:${arch/aarch64/arm64} (scripts/setup.sh)" >&2; exit 2; }
    c_includes=(-isystem "/usr/include/$c_target" -isystem /usr/include)
    abi=()
fi
swift_bin=$(dirname "$(command -v swiftc)")
toolchain=$(dirname "$swift_bin")
out=.build-static/$arch
obj=$out/obj
rm -rf "$obj" && mkdir -p "$obj"

# CKVM as a clang module; libc comes through its header (no Glibc module in Embedded mode).
cat > "$obj/module.modulemap" <<MAP
module CKVM {
    header "$PWD/Sources/CKVM/include/CKVM.h"
    export *
}
MAP
xcc=(); for f in "${c_includes[@]}" "${abi[@]}"; do xcc+=(-Xcc "$f"); done
common=(-target "$swift_target" -enable-experimental-feature Embedded -wmo -parse-as-library -Osize
        -swift-version 6 -Xfrontend -disable-stack-protector -I "$obj" -Xcc -fmodule-map-file="$obj/module.modulemap"
        "${xcc[@]}"
        -Xcc -D__linux__ -Xcc -D__gnu_linux__ -Xcc -Dlinux -Xcc -D__unix__)
# compile MODULE SOURCES...: a module (.swiftmodule for the next ones) and its object.
compile() {
    local module=$1; shift
    "$swift_bin/swiftc" "${common[@]}" -module-name "$module" -emit-module -emit-module-path "$obj/$module.swiftmodule" \
        -c "$@" -o "$obj/$module.o"
}
compile AxAddrSpace AxAddrSpace/Sources/AxAddrSpace/*.swift AxAddrSpace/Sources/AxAddrSpace/Formats/*.swift
compile KVM Sources/KVM/*.swift
compile AxVMM Sources/AxVMM/*.swift Sources/AxVMM/Devices/*.swift Sources/AxVMM/Devices/Virtio/*.swift Sources/AxVMM/CommandLine/*.swift Sources/AxVMM/Linux/*.swift Sources/AxVMM/X86/*.swift Sources/AxVMM/AArch64/*.swift Sources/AxVMM/RiscV64/*.swift Sources/AxVMM/Snapshot/*.swift Sources/AxVMM/Sandbox/*.swift Sources/AxVMM/Control/*.swift
# `axvm --version`: the commit, as the SwiftPM build's BuildCommit plugin writes it.
commit=$(git describe --always --dirty --abbrev=12 --exclude '*' 2>/dev/null || echo unknown)
printf 'let buildCommit = "%s"\n' "$commit" > "$obj/BuildCommit.swift"
compile axvm Embedded/axvm/*.swift "$obj/BuildCommit.swift"
for c in Sources/CKVM/CKVM.c Embedded/axvm/start.c; do
    "$swift_bin/clang" --target=$c_target "${abi[@]}" "${c_includes[@]}" -O2 -c "$c" -I Sources/CKVM/include -o "$obj/$(basename "$c" .c).o"
done
tables="$toolchain/lib/swift/embedded/$swift_target/libswiftUnicodeDataTables.a"
if [ "$arch" = riscv64 ]; then
    "$swift_bin/clang" --target=$c_target "${abi[@]}" -static -nostdlib -fuse-ld=lld -o "$out/axvm" \
        "$musl/lib/crt1.o" "$musl/lib/crti.o" "$obj"/*.o "$tables" "$musl/lib/libc.a" "$libgcc" "$musl/lib/crtn.o"
else
    "$swift_bin/clang" --target=$c_target -static -fuse-ld=lld -pthread -o "$out/axvm" "$obj"/*.o "$tables" -lm
fi
cp "$out/axvm" "$obj/axvm.debug"
"$swift_bin/llvm-objcopy" --strip-all "$out/axvm"
echo "build-static: $out/axvm ($(wc -c < "$out/axvm") bytes, static $arch, Embedded Swift, commit $commit)"
echo "build-static: sha256 $(sha256sum "$out/axvm" | cut -d' ' -f1)"
