#!/usr/bin/env bash
# Assembles guests/*.S into flat binaries guests/build/*.bin with the Swift toolchain's
# clang and ld.lld. Real-mode guests (".code16") are linked at 0, long-mode ones at 1 MiB.
# The AArch64 guests (guests/aarch64/*.S, contract in guests/aarch64/defs.inc) go to
# guests/build/aarch64/*.bin, linked at RAM + 1 MiB (0x40100000); the RISC-V guests
# (guests/riscv64/*.S, contract in guests/riscv64/defs.inc) to guests/build/riscv64/*.bin,
# linked at RAM + 1 MiB (0x80100000).
set -euo pipefail
cd "$(dirname "$0")/../guests"
swift_bin=$(dirname "$(command -v swiftc)")
CLANG=${CLANG:-$swift_bin/clang}
LLD=${LLD:-$swift_bin/ld.lld}
mkdir -p build
for src in *.S; do
    name=${src%.S}
    base=0x100000
    grep -q '^\s*\.code16' "$src" && base=0
    "$CLANG" --target=x86_64-unknown-none -c "$src" -o "build/$name.o"
    "$LLD" --oformat=binary --image-base=0 -Ttext="$base" -e 0 -o "build/$name.bin" "build/$name.o"
done
# memtest at CPL 0 (kernel mode): the same source with KERNEL_MODE defined.
"$CLANG" --target=x86_64-unknown-none -DKERNEL_MODE -c memtest.S -o build/memtest-kernel.o
"$LLD" --oformat=binary --image-base=0 -Ttext=0x100000 -e 0 -o build/memtest-kernel.bin build/memtest-kernel.o
# The multiboot guests (guests/multiboot/*.S): ELF32 i386 kernels for `axvm boot`, the ELF
# header's page at 1 MiB and the code above it.
"$CLANG" --target=i386-unknown-none -c multiboot/mbcheck.S -o build/mbcheck.o
"$LLD" -m elf_i386 --image-base=0x100000 -Ttext=0x101000 -e start -o build/multiboot.elf build/mbcheck.o
"$CLANG" --target=i386-unknown-none -c multiboot/mbhalt.S -o build/mbhalt.o
"$LLD" -m elf_i386 --image-base=0x100000 -Ttext=0x101000 -e start -o build/multiboot-halt.elf build/mbhalt.o
# AArch64 guests, assembled in guests/aarch64 (their .include "defs.inc" / "lib.inc").
mkdir -p build/aarch64
for src in aarch64/*.S; do
    name=$(basename "$src" .S)
    (cd aarch64 && "$CLANG" --target=aarch64-none-elf -c "$name.S" -o "../build/aarch64/$name.o")
    "$LLD" --oformat=binary --image-base=0 -Ttext=0x40100000 -e 0 -o "build/aarch64/$name.bin" "build/aarch64/$name.o"
done
# RISC-V guests (RV64GC, S-mode), assembled in guests/riscv64 likewise. They reach their
# code and strings with lla/call only (PC-relative, no GOT: clang's default for riscv64-none-elf
# is non-PIC); ld.lld's relaxation (call → jal) keeps them so.
mkdir -p build/riscv64
for src in riscv64/*.S; do
    name=$(basename "$src" .S)
    (cd riscv64 && "$CLANG" --target=riscv64-none-elf -march=rv64gc -mabi=lp64 -c "$name.S" -o "../build/riscv64/$name.o")
    "$LLD" --oformat=binary --image-base=0 -Ttext=0x80100000 -e 0 -o "build/riscv64/$name.bin" "build/riscv64/$name.o"
done
echo "guests built: $(ls build/*.bin | xargs -n1 basename | tr '\n' ' ')multiboot.elf multiboot-halt.elf; aarch64: $(ls build/aarch64/*.bin | xargs -n1 basename | tr '\n' ' '); riscv64: $(ls build/riscv64/*.bin | xargs -n1 basename | tr '\n' ' ')"
