#!/usr/bin/env bash
# Builds and runs the bare-metal hypervisors under QEMU, and checks their output against
# baremetal/expected-*.txt (written from the manuals, not from a run).
#   scripts/baremetal.sh build        build baremetal/build/hv-*.elf
#   scripts/baremetal.sh run ARCH     run one (aarch64, riscv64, x86_64) and print its output
#   scripts/baremetal.sh check        build, run each, compare with the expectations
set -euo pipefail
cd "$(dirname "$0")/.."
swift_bin=$(dirname "$(command -v swiftc)")
CLANG=$swift_bin/clang
LLD=$swift_bin/ld.lld
out=baremetal/build
lib=(AxAddrSpace/Sources/AxAddrSpace/*.swift AxAddrSpace/Sources/AxAddrSpace/Formats/*.swift)

build_aarch64() {
    mkdir -p $out/aarch64
    swiftc -target aarch64-none-none-elf -enable-experimental-feature Embedded -enable-experimental-feature Extern -wmo -parse-as-library \
        -Osize -Xfrontend -disable-stack-protector -module-name Hypervisor \
        "${lib[@]}" baremetal/common/PoolHAL.swift baremetal/common/GuestCases.swift baremetal/aarch64/Hypervisor.swift -c -o $out/aarch64/hv.o
    for c in baremetal/common/runtime.c baremetal/aarch64/uart.c; do
        "$CLANG" --target=aarch64-none-elf -O2 -ffreestanding -fno-builtin -mgeneral-regs-only -c "$c" -o "$out/aarch64/$(basename "$c" .c).o"
    done
    "$CLANG" --target=aarch64-none-elf -c baremetal/aarch64/start.S -o $out/aarch64/start.o
    "$LLD" -T baremetal/aarch64/link.ld -o $out/hv-aarch64.elf $out/aarch64/*.o
}

build_riscv64() {
    mkdir -p $out/riscv64
    swiftc -target riscv64-none-none-eabi -Xcc -march=rv64gc -Xcc -mabi=lp64d -Xcc -mcmodel=medany \
        -enable-experimental-feature Embedded -enable-experimental-feature Extern -wmo -parse-as-library \
        -Osize -Xfrontend -disable-stack-protector -module-name Hypervisor \
        "${lib[@]}" baremetal/common/PoolHAL.swift baremetal/common/GuestCases.swift baremetal/riscv64/Hypervisor.swift -c -o $out/riscv64/hv.o
    for c in baremetal/common/runtime.c baremetal/riscv64/uart.c; do
        "$CLANG" --target=riscv64-none-elf -march=rv64gc -mabi=lp64d -mcmodel=medany -O2 -ffreestanding -fno-builtin \
            -c "$c" -o "$out/riscv64/$(basename "$c" .c).o"
    done
    "$CLANG" --target=riscv64-none-elf -march=rv64gch -mabi=lp64d -mcmodel=medany -c baremetal/riscv64/start.S -o $out/riscv64/start.o
    "$LLD" -T baremetal/riscv64/link.ld -o $out/hv-riscv64.elf $out/riscv64/*.o
}

run_riscv64() {
    timeout 120 qemu-system-riscv64 -M virt -cpu rv64,h=true -m 128M -nographic -bios default \
        -kernel $out/hv-riscv64.elf </dev/null
}

build_x86_64() {
    mkdir -p $out/x86_64
    swiftc -target x86_64-unknown-none-elf -enable-experimental-feature Embedded -enable-experimental-feature Extern \
        -wmo -parse-as-library -Osize -Xfrontend -disable-stack-protector -module-name Hypervisor \
        "${lib[@]}" baremetal/common/PoolHAL.swift baremetal/common/GuestCases.swift baremetal/x86_64/Hypervisor.swift \
        -c -o $out/x86_64/hv.o
    for c in baremetal/common/runtime.c baremetal/x86_64/uart.c; do
        "$CLANG" --target=x86_64-unknown-none -O2 -ffreestanding -fno-builtin -mno-red-zone -c "$c" -o "$out/x86_64/$(basename "$c" .c).o"
    done
    "$CLANG" --target=x86_64-unknown-none -c baremetal/x86_64/start.S -o $out/x86_64/start.o
    "$LLD" -T baremetal/x86_64/link.ld -o $out/x86_64/hv.elf $out/x86_64/*.o
    "$swift_bin/llvm-objcopy" -O binary $out/x86_64/hv.elf $out/hv-x86_64.bin
}

run_x86_64() {
    timeout 120 qemu-system-x86_64 -cpu qemu64,+svm,+npt -m 128M -nographic -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $out/hv-x86_64.bin </dev/null || true
}

run_aarch64() {
    timeout 120 qemu-system-aarch64 -M virt,virtualization=on -cpu cortex-a57 -m 128M -nographic \
        -semihosting -kernel $out/hv-aarch64.elf </dev/null
}

# Expected checksum of fill_sum over [base, base+size): sum of (addr * golden) ^ 1, in
# 64-bit words (AArch64, RISC-V) or 32-bit words (the 32-bit x86 guest).
checksum() {
    python3 -c "
b, n, bits = $1, $2, $3
m = 2**bits - 1
g = 0x9e3779b97f4a7c15 if bits == 64 else 0x9e3779b9
print(hex(sum(((a * g) & m) ^ 1 for a in range(b, b + n, bits // 8)) & m))"
}

check_arch() {
    local arch=$1 expected actual bits=64
    [ "$arch" = x86_64 ] && bits=32
    expected=$(grep -v "^#" baremetal/expected-$arch.txt | sed -e "s/@SUM_A@/$(checksum 0x41000000 0x100000 $bits)/" \
        -e "s/@SUM_B@/$(checksum 0x42000000 0x100000 $bits)/")
    actual=$(run_$arch | tr -d '\r' | grep -E '^\[|^ALL DONE' | grep -v -e 'VTCR_EL2' -e 'hgatp' -e 'N_CR3' || true)
    if [ "$actual" != "$expected" ]; then
        echo "bare metal $arch: output differs from baremetal/expected-$arch.txt:"
        diff <(echo "$expected") <(echo "$actual") || true
        return 1
    fi
    echo "bare metal $arch: all cases as expected ($(echo "$actual" | wc -l) lines)"
}

case "${1:-check}" in
    build) build_aarch64; build_riscv64; build_x86_64 ;;
    run) build_${2:-aarch64}; run_${2:-aarch64} ;;
    check)
        build_aarch64
        build_riscv64
        build_x86_64
        for arch in aarch64 riscv64 x86_64; do
            command -v qemu-system-$arch >/dev/null || { echo "qemu-system-$arch missing: run scripts/setup.sh"; exit 1; }
        done
        status=0
        check_arch aarch64 || status=1
        check_arch riscv64 || status=1
        check_arch x86_64 || status=1
        exit $status ;;
    *) echo "usage: $0 build|run ARCH|check"; exit 2 ;;
esac
