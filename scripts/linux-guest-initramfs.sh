#!/usr/bin/env bash
# A tiny initramfs for Linux guests of `axvm boot` (and QEMU in the rigs): busybox-static
# and an /init that prints a marker, the RAM the kernel sees (MemTotal), the CPUs it runs
# (nproc, and a line from each CPU) and the controller of the serial interrupt, then
# reboots, which ends the VM (axvm: i8042 reset with reboot=k on x86, PSCI SYSTEM_RESET on
# arm64; QEMU: -no-reboot), or powers off if the command line has axvm.end=poweroff. With
# axvm.snap it also checksums data it wrote before a snapshot point and again after it. With
# axvm.virtio it loads the virtio modules ($GUEST_MODULES: virtio_ring, virtio, virtio_mmio,
# virtio_blk, virtio-rng .ko files of the guest's kernel, put in the archive) and uses the
# devices: 1 MiB of random data written to /dev/vda and read back (uncached), a write to
# /dev/vdb (a read-only disk) refused, bytes read from /dev/hwrng. With root=/dev/vdX it
# loads them and ext4's (crc16, mbcache, jbd2, crc32c_generic, ext4), mounts that disk and
# hands over to its /sbin/init (scripts/linux-guest-rootfs.sh makes such a disk). With
# axvm.disksnap it keeps /dev/vda busy across a snapshot point (see below); with
# axvm.diskbench it runs $DISKBENCH (put in the archive as /bin/diskbench) on /dev/vda; with
# axvm.balloon it fills and frees 256 MiB for virtio-balloon's free page reporting.
#   scripts/linux-guest-initramfs.sh [OUT]   default OUT: .build-rig/linux-guest/initramfs.cpio.gz
# busybox: $BUSYBOX (any architecture's static busybox: the archive is written by
# scripts/cpio-newc.py), else the rig's cache (scripts/kvm-rig.sh fetch), else /bin/busybox
# if static.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build-rig/linux-guest/initramfs.cpio.gz}
cache=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}
bb=${BUSYBOX:-$cache/busybox/bin/busybox}
if [ ! -x "$bb" ]; then
    if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then bb=/bin/busybox
    else echo "linux-guest-initramfs: no static busybox: run scripts/kvm-rig.sh fetch (or set BUSYBOX)" >&2; exit 1; fi
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,dev,modules}
cp "$bb" "$root/bin/busybox"
if [ -n "${GUEST_MODULES:-}" ]; then cp "$GUEST_MODULES"/*.ko "$root/modules/" 2>/dev/null || true; fi
# DISKBENCH: a static Benchmarks/diskbench/diskbench.c for the guest, run with axvm.diskbench.
if [ -n "${DISKBENCH:-}" ]; then cp "$DISKBENCH" "$root/bin/diskbench"; fi
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
# The kernel opens /dev/console for init only if the node exists: mount devtmpfs and take it.
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
echo "axvm-linux: init reached"
# The guest's own clock at init: the kernel's time since its clock started (after the
# decompressor and the early boot), to set against the wall time the VMM measures.
echo "axvm-linux: uptime at init $(/bin/busybox cut -d' ' -f1 /proc/uptime) s"
/bin/busybox grep '^MemTotal:' /proc/meminfo
# Which interrupt controller delivers the UART's interrupt ("IO-APIC 4-edge" with axvm's MP
# table; "XT-PIC" when Linux runs the 8259 in virtual-wire mode).
/bin/busybox awk '/ttyS/ { print "axvm-linux: serial interrupt:", $3, $4 }' /proc/interrupts
n=$(/bin/busybox nproc)
echo "axvm-linux: $n CPUs online"
# Work on every CPU: a process pinned to each prints where it ran.
i=0
while [ $i -lt $n ]; do
    /bin/busybox taskset -c $i /bin/busybox sh -c "echo axvm-linux: ran on CPU \$(/bin/busybox awk '{ print \$39 }' /proc/self/stat)"
    i=$((i + 1))
done
# axvm.snap (the rig's snapshot cases): data written before "axvm-snap: ready", where axvm
# takes the snapshot, and read back after it: in a restored VM the two checksums agree.
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.snap "*)
    /bin/busybox mkdir -p /tmp
    /bin/busybox mount -t tmpfs tmp /tmp
    /bin/busybox seq 1 200000 > /tmp/data
    /bin/busybox dd if=/dev/urandom of=/tmp/random bs=1M count=8 2>/dev/null
    echo "axvm-snap: before $(/bin/busybox cat /tmp/data /tmp/random | /bin/busybox md5sum | /bin/busybox cut -c1-32)"
    echo "axvm-snap: ready"
    echo "axvm-snap: resumed"
    echo "axvm-snap: after $(/bin/busybox cat /tmp/data /tmp/random | /bin/busybox md5sum | /bin/busybox cut -c1-32)" ;;
esac
# The modules, in dependency order (each module's "depends="; ext4 also asks the crypto API for
# "crc32c" by name); a driver built into the kernel has none.
load_modules() {
    /bin/busybox mkdir -p /sys
    /bin/busybox mount -t sysfs sys /sys
    for m in virtio_ring virtio virtio_mmio virtio_blk virtio-rng virtio_balloon crc16 mbcache jbd2 crc32c_generic ext4; do
        [ -f /modules/$m.ko ] || continue
        /bin/busybox insmod /modules/$m.ko || echo "axvm-linux: insmod $m failed"
    done
}
# wait_for DEV: up to 5 s for a block device to appear (the driver probes asynchronously).
wait_for() {
    i=0
    while [ ! -b "$1" ] && [ $i -lt 50 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
}
# pattern_check TAG: 1 MiB of random data written to /dev/vda, synced, read back past the page
# cache; prints "TAG: vda wrote MD5 read MD5".
pattern_check() {
    /bin/busybox dd if=/dev/urandom of=/pattern bs=64k count=16 2>/dev/null
    [ -b /dev/vda ] && /bin/busybox dd if=/pattern of=/dev/vda bs=64k 2>/dev/null && /bin/busybox sync
    echo 3 > /proc/sys/vm/drop_caches
    w=$(/bin/busybox md5sum < /pattern | /bin/busybox cut -c1-32)
    r=$(/bin/busybox dd if=/dev/vda bs=64k count=16 2>/dev/null | /bin/busybox md5sum | /bin/busybox cut -c1-32)
    echo "$1: vda wrote $w read $r"
}
# root=/dev/vdX: the root file system is on that disk; mount it and run its /sbin/init.
root=$(/bin/busybox sed -n 's/.*\broot=\(\/dev\/vd[a-z]*\).*/\1/p' /proc/cmdline)
if [ -n "$root" ]; then
    load_modules
    wait_for "$root"
    /bin/busybox mkdir -p /newroot
    if /bin/busybox mount -t ext4 "$root" /newroot; then
        /bin/busybox umount /sys
        /bin/busybox umount /proc
        /bin/busybox mount --move /dev /newroot/dev
        exec /bin/busybox switch_root /newroot /sbin/init
    fi
    echo "axvm-linux: cannot mount $root as ext4"
fi
# axvm.virtio (the rig's virtio case): the modules, then each device used once.
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.virtio "*)
    load_modules
    wait_for /dev/vdb
    echo "axvm-virtio: $(/bin/busybox ls /sys/bus/virtio/devices | /bin/busybox wc -l) devices"
    for d in vda vdb; do [ -b /dev/$d ] || echo "axvm-virtio: no /dev/$d"; done
    pattern_check axvm-virtio
    if [ ! -b /dev/vdb ] || /bin/busybox dd if=/pattern of=/dev/vdb bs=4k count=1 2>/dev/null; then echo "axvm-virtio: vdb took a write"
    else echo "axvm-virtio: vdb refused the write"; fi
    echo "axvm-virtio: vdb reads $(/bin/busybox dd if=/dev/vdb bs=19 count=1 2>/dev/null)"
    echo "axvm-virtio: rng $(/bin/busybox cat /sys/class/misc/hw_random/rng_current), $(/bin/busybox dd if=/dev/hwrng bs=16 count=1 2>/dev/null | /bin/busybox wc -c) bytes read" ;;
esac
# axvm.disksnap (the rig's snapshot of a VM with devices): a writer keeps /dev/vda busy with
# direct writes while "axvm-snap: ready" (where axvm takes the snapshot) is printed, so that
# requests are in flight; after it, the writer stops (in a restored VM its requests in flight
# at the snapshot must complete, or it never does), a pattern is written, synced, read back
# past the page cache and checksummed, and the rng read.
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.disksnap "*)
    load_modules
    wait_for /dev/vda
    (
        n=0
        while [ ! -f /stop-writer ]; do
            /bin/busybox dd if=/dev/urandom of=/dev/vda bs=64k count=4 seek=$((n % 32 * 4)) oflag=direct 2>/dev/null \
                || echo "axvm-disksnap: a write failed"
            n=$((n + 1))
        done
        echo "axvm-disksnap: the writer stopped after $n writes" > /writer-done
    ) &
    /bin/busybox sleep 1
    echo "axvm-snap: ready"
    echo "axvm-snap: resumed"
    /bin/busybox touch /stop-writer
    wait
    /bin/busybox sed 's/after [0-9]* writes/after its writes/' /writer-done
    pattern_check axvm-disksnap
    echo "axvm-disksnap: rng $(/bin/busybox dd if=/dev/hwrng bs=16 count=1 2>/dev/null | /bin/busybox wc -c) bytes read" ;;
esac
# axvm.balloon (the rig's balloon cases): with the virtio-balloon driver bound (if there is a
# balloon), 256 MiB written into a tmpfs (a random MiB 256 times) and checksummed, deleted;
# a wait for free page reporting (Linux reports free 2/4 MiB blocks about 2 s after they are
# freed); then the same 256 MiB again, checksummed (their pages come back as re-faults). The
# lines mark the phases for a host sampling its memory; "workload took" is the guest's own
# time for the two writes. axvm.balloonstorm: two writers, one per CPU, each writing,
# checking and deleting 32 MiB files for 60 s while reports race them.
uptime() { /bin/busybox cut -d' ' -f1 /proc/uptime; }
fill() {  # fill FILE MIB: a random MiB MIB times; prints the MD5
    i=0
    while [ $i -lt $2 ]; do /bin/busybox cat /blk; i=$((i + 1)); done > "$1"
    /bin/busybox md5sum < "$1" | /bin/busybox cut -c1-32
}
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.balloon "*|*" axvm.balloonstorm "*)
    load_modules
    i=0
    while [ -z "$(/bin/busybox ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | /bin/busybox grep virtio)" ] && [ $i -lt 50 ]; do
        /bin/busybox sleep 0.1; i=$((i + 1))
    done
    /bin/busybox ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | /bin/busybox grep -q virtio || echo "axvm-balloon: no balloon bound"
    /bin/busybox mkdir -p /fill
    /bin/busybox mount -t tmpfs -o size=300m fill /fill
    /bin/busybox dd if=/dev/urandom of=/blk bs=1M count=1 2>/dev/null
    /bin/busybox sleep 3
    echo "axvm-balloon: writing 256 MiB"
    t0=$(uptime)
    a=$(fill /fill/data 256)
    t1=$(uptime)
    echo "axvm-balloon: wrote 256 MiB"
    /bin/busybox rm /fill/data
    echo "axvm-balloon: freed"
    /bin/busybox sleep 20
    echo "axvm-balloon: waited for reporting"
    t2=$(uptime)
    b=$(fill /fill/data 256)
    t3=$(uptime)
    if [ "$a" = "$b" ]; then echo "axvm-balloon: wrote 256 MiB again, checksums agree"; else echo "axvm-balloon: wrote 256 MiB again, md5 $b, first $a"; fi
    echo "axvm-balloon: workload took $(/bin/busybox awk -v a=$t0 -v b=$t1 -v c=$t2 -v d=$t3 'BEGIN { printf "%.2f", b - a + d - c }') s"
    /bin/busybox rm /fill/data ;;
esac
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.balloonstorm "*)
    want=$(fill /fill/check 32)
    /bin/busybox rm /fill/check
    end=$(( $(/bin/busybox cut -d. -f1 /proc/uptime) + 60 ))
    for c in 0 1; do
        /bin/busybox taskset -c $c /bin/busybox sh -c '
            n=0; bad=0
            while [ $(/bin/busybox cut -d. -f1 /proc/uptime) -lt '"$end"' ]; do
                i=0; while [ $i -lt 32 ]; do /bin/busybox cat /blk; i=$((i + 1)); done > /fill/storm'"$c"'
                [ "$(/bin/busybox md5sum < /fill/storm'"$c"' | /bin/busybox cut -c1-32)" = '"$want"' ] || bad=$((bad + 1))
                /bin/busybox rm /fill/storm'"$c"'
                n=$((n + 1))
            done
            echo "axvm-storm: CPU '"$c"': $n rounds, $bad checksum errors" > /storm'"$c"'' &
    done
    wait
    /bin/busybox cat /storm0 /storm1
    /bin/busybox sed 's/: [0-9]* rounds, /: /' /storm0 /storm1 ;;
esac
# axvm.diskbench (scripts/kvm-rig.sh disk): /bin/diskbench on /dev/vda, the same in every VMM.
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.diskbench "*)
    load_modules
    wait_for /dev/vda
    if [ -x /bin/diskbench ]; then /bin/diskbench /dev/vda 64 2000; else echo "diskbench: not in this initramfs"; fi ;;
esac
case " $(/bin/busybox cat /proc/cmdline) " in
*" axvm.end=poweroff "*)
    echo "axvm-linux: powering off to end the VM"
    /bin/busybox poweroff -f ;;
*" axvm.end=halt "*)
    echo "axvm-linux: halting to end the VM"
    /bin/busybox halt -f ;;
*)
    echo "axvm-linux: rebooting to end the VM"
    /bin/busybox reboot -f ;;
esac
INIT
chmod +x "$root/init"
mkdir -p "$(dirname "$out")"
python3 scripts/cpio-newc.py "$root" | gzip -9 > "$out"
echo "linux-guest-initramfs: $out ($(du -h "$out" | cut -f1))"
