#!/usr/bin/env bash
# An ext4 root file system for Linux guests on a virtio-blk disk: busybox-static and a
# /sbin/init that keeps data across boots. Made with `mke2fs -d` from a directory tree (no
# loop mount, no root needed). The initramfs of scripts/linux-guest-initramfs.sh mounts it
# when the command line says root=/dev/vdX, and hands over with switch_root.
#   scripts/linux-guest-rootfs.sh [OUT [SIZE]]   default OUT: .build-rig/linux-guest/root.img,
#                                                SIZE: 32M (a sparse file)
# busybox: as for scripts/linux-guest-initramfs.sh ($BUSYBOX, the rig's cache, /bin/busybox).
# What /sbin/init does on each boot (its lines start with "axvm-root:"):
#   - names the device and file system it runs from and counts its boot (/var/boot-count);
#   - first boot: writes /data/file (512 KiB of random bytes and a text tail), syncs, drops the
#     page cache, reads the file back from the disk and keeps its MD5 in /data/md5;
#   - later boots: reads /data/file and says whether it still has the MD5 kept in /data/md5;
#   - remounts / read-only (a clean file system) and reboots, which ends the VM.
# The host can check the image afterwards: debugfs -R 'cat /data/md5' IMG, e2fsck -fn IMG.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build-rig/linux-guest/root.img}
size=${2:-32M}
cache=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}
bb=${BUSYBOX:-$cache/busybox/bin/busybox}
if [ ! -x "$bb" ]; then
    if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then bb=/bin/busybox
    else echo "linux-guest-rootfs: no static busybox: run scripts/kvm-rig.sh fetch (or set BUSYBOX)" >&2; exit 1; fi
fi
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
[ -x "$mke2fs" ] || { echo "linux-guest-rootfs: mke2fs missing: apt-get install e2fsprogs" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,var,data}
cp "$bb" "$root/bin/busybox"
cat > "$root/sbin/init" <<'INIT'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t devtmpfs dev /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
echo "axvm-root: running from $($bb awk '$2 == "/" { print $1, $3 }' /proc/mounts)"
n=$(( $($bb cat /var/boot-count 2>/dev/null || echo 0) + 1 ))
echo $n > /var/boot-count
md5() { $bb md5sum "$1" | $bb cut -c1-32; }
if [ -f /data/md5 ]; then
    now=$(md5 /data/file)
    if [ "$now" = "$($bb cat /data/md5)" ]; then echo "axvm-root: boot $n: /data/file persisted"
    else echo "axvm-root: boot $n: /data/file changed: md5 $now, $($bb cat /data/md5) when written"; fi
else
    $bb dd if=/dev/urandom of=/data/file bs=64k count=8 2>/dev/null
    $bb seq 1 20000 >> /data/file
    written=$(md5 /data/file)
    $bb sync
    echo 3 > /proc/sys/vm/drop_caches
    if [ "$(md5 /data/file)" = "$written" ]; then echo "axvm-root: boot $n: wrote /data/file and read it back from the disk"
    else echo "axvm-root: boot $n: /data/file read back differs from what was written"; fi
    echo "$written" > /data/md5
fi
$bb sync
$bb mount -o remount,ro / || echo "axvm-root: / stays read-write"
echo "axvm-root: rebooting to end the VM"
$bb reboot -f
INIT
chmod +x "$root/sbin/init"
mkdir -p "$(dirname "$out")"
rm -f "$out"
"$mke2fs" -q -F -t ext4 -L axvm-root -d "$root" "$out" "$size"
echo "linux-guest-rootfs: $out ($size, ext4)"
