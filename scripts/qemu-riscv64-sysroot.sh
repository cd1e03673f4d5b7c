#!/usr/bin/env bash
# Debian trixie's own riscv64 QEMU (qemu-system-riscv64 of qemu-system-riscv:riscv64, 10.0) as
# a minimal directory tree, to be merged into the riscv64 rig's root filesystem (busybox only),
# so that /usr/bin/qemu-system-riscv64 runs there and boots a guest with
# `-M virt -enable-kvm -cpu host -nographic -kernel ... -initrd ... -nic none -no-reboot`
# beside axvm (with KVM, QEMU's virt machine loads no firmware: -bios none).
#   scripts/qemu-riscv64-sysroot.sh DEST
# What scripts/qemu-arm64-sysroot.sh does for arm64, with its code (sourced, with the
# parameters below): DEST gets usr/bin/qemu-system-riscv64, the shared libraries its DT_NEEDED
# entries name (recursively, from (usr/)lib/riscv64-linux-gnu) and the loader
# lib/ld-linux-riscv64-lp64d.so.1 (a symlink into usr/lib/riscv64-linux-gnu). The .debs:
# qemu-system-riscv and the closure of its Depends, fetched through the riscv64 rig's own apt
# sources list, lists and package cache ($AXVM_RIG_CACHE/riscv64/apt, made by
# `scripts/kvm-rig.sh fetch riscv64`; Debian 12 has no riscv64 port, and the machine's apt
# configuration is left alone) into $AXVM_RIG_CACHE/riscv64/qemu-debs, unpacked into
# riscv64/qemu-staging. Check: qemu-riscv64-static -L DEST runs `qemu-system-riscv64
# --version`, then boots the rig's riscv64 kernel under TCG (-cpu rv64, the OpenSBI of the
# closure's opensbi package as -bios) for AXVM_QEMU_CHECK_SECONDS (60) seconds at most;
# AXVM_QEMU_CHECK=0 skips the boot. Needs apt, dpkg-deb, llvm-readelf or readelf,
# qemu-user-static.
set -euo pipefail
cd "$(dirname "$0")/.."
rv_apt_dir=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}/riscv64/apt
[ -f "$rv_apt_dir/sources.list" ] \
    || { echo "qemu-riscv64-sysroot: no $rv_apt_dir/sources.list: run scripts/kvm-rig.sh fetch riscv64" >&2; exit 1; }

qs_arch=riscv64
qs_pkg=qemu-system-riscv
qs_binary=usr/bin/qemu-system-riscv64
qs_triplet=riscv64-linux-gnu
qs_elf=RISC-V
qs_user=qemu-riscv64-static
# The rig's apt (scripts/kvm-rig.sh rv_apt): trixie main, riscv64 as the only architecture.
qs_apt_opts=(-o Dir::Etc::sourcelist="$rv_apt_dir/sources.list" -o Dir::Etc::sourceparts=-
             -o Dir::State::Lists="$rv_apt_dir/lists" -o Dir::Cache="$rv_apt_dir/cache"
             -o APT::Architecture=riscv64 -o APT::Architectures::=riscv64)
qs_fetch="scripts/kvm-rig.sh fetch riscv64"
# The boot check runs under TCG, which needs the SBI firmware: OpenSBI's generic fw_dynamic
# from the closure's opensbi package (not copied into DEST: the rig's QEMU runs with KVM).
qs_check_args() {
    local fw
    fw=$(find "$staging" -path '*/opensbi/generic/fw_dynamic.bin' | head -1)
    [ -n "$fw" ] || die "no opensbi/generic/fw_dynamic.bin in $staging (the opensbi package)"
    check_args=(-M virt -cpu rv64 -bios "$fw")
    check_console=ttyS0
}

# shellcheck source=qemu-arm64-sysroot.sh
. scripts/qemu-arm64-sysroot.sh
