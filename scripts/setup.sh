#!/usr/bin/env bash
# Installs the Debian packages the demos and tests use (QEMU system emulators for the
# bare-metal hypervisors: AArch64, RISC-V, x86_64 with SVM under TCG), and for the arm64 KVM
# rig (scripts/kvm-rig.sh ... aarch64): the arm64 architecture in dpkg and arm64 glibc and
# libgcc, so that the toolchain's clang links static aarch64 binaries
# (clang --target=aarch64-linux-gnu -static: crt1.o, libc.a, <linux/kvm.h> from libc6-dev and
# linux-libc-dev; crtbeginT.o, libgcc.a, libgcc_eh.a from libgcc-12-dev).
# Idempotent and quiet when nothing is missing; needs root or sudo for apt-get.
set -euo pipefail
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-system-riscv64 >/dev/null || need+=(qemu-system-misc)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# qemu-aarch64-static runs the static aarch64 axvm's option parsing here (scripts/test-static.sh).
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# dtc reads back the device trees axvm writes for arm64 Linux (Tests/AxVMMTests/ArmLinuxTests.swift).
command -v dtc >/dev/null || need+=(device-tree-compiler)
# rsvg-convert draws the --fault-map SVG in a test (Tests/AxVMMTests/FaultMapTests.swift).
command -v rsvg-convert >/dev/null || need+=(librsvg2-bin)
# iasl (ACPICA) disassembles the ACPI tables axvm writes for x86 Linux (Tests/AxVMMTests/ACPITablesTests.swift).
command -v iasl >/dev/null || need+=(acpica-tools)
# mke2fs, e2fsck, debugfs: the Linux guests' ext4 root image (scripts/linux-guest-rootfs.sh) and
# its check after the rigs' boots (scripts/kvm-rig.sh check_root_image).
PATH=$PATH:/sbin:/usr/sbin command -v mke2fs >/dev/null && PATH=$PATH:/sbin:/usr/sbin command -v debugfs >/dev/null || need+=(e2fsprogs)
# strace lists the system calls each axvm thread makes under the sandbox (Tests/AxVMMTests/SandboxTests.swift).
command -v strace >/dev/null || need+=(strace)
# gcc and the aarch64 cross gcc build kvm-unit-tests (scripts/kvm-unit-tests.sh) for the rigs.
command -v gcc >/dev/null || need+=(gcc)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
# The static riscv64 axvm (scripts/build-static.sh riscv64): Linux's riscv64 headers, and libgcc
# for the lp64 calling convention from the bare-metal multilib toolchain (scripts/musl-riscv64.sh).
[ -d /usr/riscv64-linux-gnu/include/asm ] || need+=(linux-libc-dev-riscv64-cross)
command -v riscv64-unknown-elf-gcc >/dev/null || need+=(gcc-riscv64-unknown-elf)
# The riscv64 KVM rig's static C baseline (scripts/kvm-rig.sh build riscv64): the riscv64 cross gcc
# and its glibc (lp64d: crt1.o, libc.a, libpthread); QEMU's riscv64 system emulator is above.
command -v riscv64-linux-gnu-gcc >/dev/null || need+=(gcc-riscv64-linux-gnu)
[ -f /usr/riscv64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-riscv64-cross)
update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    update=1
fi
for p in libc6-dev:arm64 libgcc-12-dev:arm64; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ] || [ $update = 1 ]; then
    $sudo apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
