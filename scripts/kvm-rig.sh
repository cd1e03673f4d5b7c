#!/usr/bin/env bash
# Real KVM beyond this machine's kvm_pvm: a Debian kernel booted under QEMU's pure emulator
# (TCG) with an AMD CPU model that has SVM and nested paging, so kvm_amd loads with NPT and
# axvm runs on it from an initramfs; and Debian's arm64 kernel under qemu-system-aarch64 at EL2,
# so arm64 KVM (VHE or nVHE) runs the static aarch64 axvm. How it works: docs/rigs.md.
#   scripts/kvm-rig.sh fetch            Debian kernel + busybox-static .debs, cached and unpacked
#   scripts/kvm-rig.sh build x86_64     axvm (static Swift stdlib), guests, C baseline, initramfs
#   scripts/kvm-rig.sh test x86_64      boot, run rig/init.sh's suite, compare with rig/expected-x86_64.txt
#   scripts/kvm-rig.sh shell x86_64     boot to a busybox prompt (Ctrl-A x leaves QEMU)
#   scripts/kvm-rig.sh compare x86_64 [LOG]  check a saved log (default: the last test's) again
#   scripts/kvm-rig.sh linux x86_64 [ROUNDS]  Linux on axvm vs QEMU microvm only, ROUNDS (3) rounds
#   scripts/kvm-rig.sh soak x86_64 [N] [ARGS]  N (10) lazy Linux boots in a row, ARGS to axvm boot
#   scripts/kvm-rig.sh disk x86_64 [ROUNDS]   virtio-blk throughput, latency, interrupts and exits
#                                        per request: axvm vs QEMU microvm, ROUNDS (3) rounds
#   scripts/kvm-rig.sh balloon x86_64       free page reporting: host memory over time, axvm vs QEMU
#   scripts/kvm-rig.sh sandbox x86_64 [N]   Linux boot with and without the sandbox, N interleaved rounds
#   scripts/kvm-rig.sh kut x86_64 [NAME...]  kvm-unit-tests: every default entry on axvm and on QEMU
#                                        (build with AXVM_KUT=the suite's tarball or checkout)
#                                        microvm, the cost to the guest, 60 s of racing writers
# arm64 (KVM at EL2, built into Debian's arm64 kernel; qemu-system-aarch64 -M virt,virtualization=on):
#   scripts/kvm-rig.sh fetch aarch64     linux-image-6.1.0-*-arm64-unsigned + busybox-static:arm64
#   scripts/kvm-rig.sh build aarch64     static aarch64 axvm (scripts/build-static.sh aarch64, or the
#                                        binary AXVM_RIG_AXVM names), guests/build/aarch64 (or the
#                                        .bin files in AXVM_RIG_GUESTS), C baseline
#   scripts/kvm-rig.sh test aarch64 [max|cortex-a57|both]  -cpu max (VHE) and/or cortex-a57 (nVHE);
#                                        default both, compared with rig/expected-aarch64.txt
#   scripts/kvm-rig.sh shell aarch64 [max|cortex-a57]      boot to a busybox prompt
#   scripts/kvm-rig.sh compare aarch64 [max|cortex-a57|both]  check the saved logs again
#   scripts/kvm-rig.sh disk aarch64 [max|cortex-a57] [ROUNDS]  the disk benchmark vs QEMU virt
#   scripts/kvm-rig.sh balloon aarch64 [max|cortex-a57]        free page reporting vs QEMU virt
#   scripts/kvm-rig.sh sandbox aarch64 [max|cortex-a57] [N]    Linux boot with and without the sandbox
#   scripts/kvm-rig.sh kut aarch64 [max|cortex-a57] [NAME...]  kvm-unit-tests on axvm and on QEMU
# riscv64 (KVM a module, the H extension; qemu-system-riscv64 -M virt -cpu rv64, OpenSBI):
#   scripts/kvm-rig.sh fetch riscv64     Debian trixie's linux-image-6.12.*-riscv64 + busybox-static
#                                        (riscv64), through the rig's own apt sources list
#   scripts/kvm-rig.sh build riscv64     static riscv64 axvm (scripts/build-static.sh riscv64, or
#                                        AXVM_RIG_AXVM), guests/build/riscv64 (or AXVM_RIG_GUESTS),
#                                        the C baseline (Benchmarks/uffd-baseline/baseline.c), kvm.ko,
#                                        trixie's riscv64 QEMU (scripts/qemu-riscv64-sysroot.sh)
#   scripts/kvm-rig.sh test riscv64      boot, suite_riscv64, compare with rig/expected-riscv64.txt
#   scripts/kvm-rig.sh shell riscv64     boot to a busybox prompt
#   scripts/kvm-rig.sh compare riscv64 [LOG]  check the saved log again
#   scripts/kvm-rig.sh kut riscv64 [NAME...]  kvm-unit-tests' riscv entries on axvm and on QEMU
#   scripts/kvm-rig.sh linux riscv64 [ROUNDS]  the Linux cases, then ROUNDS (3) rounds of axvm
#                                        lazy 4K / 64K / populated vs QEMU virt with KVM in the rig
# Cache: $AXVM_RIG_CACHE (default ~/.cache/axvm-rig; arm64 in its arm64/ subdirectory, riscv64
# in riscv64/), outside git; AXVM_RIG_REFRESH=1 makes fetch look up the current kernel again.
# Build output: .build-rig/rig-x86_64/, .build-rig/rig-aarch64/, .build-rig/rig-riscv64/.
# Slow is not hung (rig_watch): rig/init.sh announces each case and its timeout; a console
# silent for longer than the current case's timeout plus AXVM_RIG_MARGIN (default 60) seconds
# is a hang, and the rig shows QEMU's CPU state and what axvm's threads do, then ends. A QEMU
# using no CPU for 60 s is a stall (booted once more). AXVM_RIG_TIMEOUT (seconds; 0: none) is
# only an outer bound on a boot that keeps printing: default 3600 (`test` took 11 minutes
# beside other builds, 20 with two more busy loops on this 2-core machine). AXVM_RIG_HANG=CASE stops that case's axvm, to try the watch. arm64 has no second
# serial port (-M virt): its hangs show QEMU's CPU state but not axvm's threads.
# AXVM_RIG_SMP (arm64, default 1) and AXVM_RIG_PIN: see qemu_aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}
out=$repo/.build-rig/rig-x86_64

die() { echo "kvm-rig: $*" >&2; exit 1; }

# The Linux guest's modules, taken from the rig's own kernel package: virtio over MMIO, its disk,
# entropy and balloon drivers, and ext4 with what it needs (the crc32c shash it asks the crypto API
# for by name) for the guest's root file system on virtio-blk. Load order:
# scripts/linux-guest-initramfs.sh.
GUEST_MODULES="virtio_ring virtio virtio_mmio virtio_blk virtio-rng virtio_balloon crc16 mbcache jbd2 crc32c_generic ext4"
GUEST_MODULE_PATHS=('*/drivers/virtio/*.ko' '*/drivers/block/virtio_blk.ko' '*/drivers/char/hw_random/virtio-rng.ko'
    '*/lib/crc16.ko' '*/fs/mbcache.ko' '*/fs/jbd2/jbd2.ko' '*/crypto/crc32c_generic.ko' '*/fs/ext4/ext4.ko')

# take_guest_modules TREE DIR: GUEST_MODULES from an unpacked kernel package TREE into DIR (a
# module built into the kernel has no .ko: with ALLOW_BUILTIN=1 it is left out).
take_guest_modules() {
    local m
    mkdir -p "$2"
    for m in $GUEST_MODULES; do
        find "$1" -name "$m.ko" -exec cp {} "$2/" \;
        [ -f "$2/$m.ko" ] || [ "${ALLOW_BUILTIN:-0}" = 1 ] || die "$m.ko not in the kernel package"
    done
}

# --- fetch ---------------------------------------------------------------------------------

# kernel_package ARCH (amd64 | arm64): the unsigned twin of the kernel Debian's
# linux-image-ARCH points at (its modules are the same; the unsigned package has no shim
# dependency), else the highest 6.1.0-N.
kernel_package() {
    local arch=$1 q="" abi
    [ "$arch" = amd64 ] || q=":$arch"
    abi=$(apt-cache depends "linux-image-$arch$q" 2>/dev/null | sed -n "s/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-$arch\)\(:$arch\)\{0,1\}\$/\1/p" | head -1)
    if [ -n "$abi" ] && apt-cache show "linux-image-$abi-unsigned$q" >/dev/null 2>&1; then
        echo "linux-image-$abi-unsigned"
        return
    fi
    apt-cache search --names-only "^linux-image-6\.1\.0-[0-9]+-$arch-unsigned\$" | cut -d' ' -f1 | sort -V | tail -1
}

# kernel_package_or_update ARCH: kernel_package, after an apt-get update if apt knows none.
kernel_package_or_update() {
    local pkg
    pkg=$(kernel_package "$1")
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(kernel_package "$1")
    fi
    [ -n "$pkg" ] || die "no linux-image-6.1.0-*-$1-unsigned package known to apt (run scripts/setup.sh)"
    echo "$pkg"
}

# download_debs DIR PKG ARCH: the kernel package and busybox-static for ARCH into DIR (once);
# sets kdeb and bdeb to the .deb files.
download_debs() {
    local dir=$1 pkg=$2 arch=$3 q=""
    [ "$arch" = amd64 ] || q=":$arch"
    (
        cd "$dir"
        # apt-get download as root warns that _apt cannot write here; the download works.
        ls "${pkg}"_*_"$arch".deb >/dev/null 2>&1 || apt-get download -q "$pkg$q" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
        ls busybox-static_*_"$arch".deb >/dev/null 2>&1 || apt-get download -q "busybox-static$q" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    )
    kdeb=$(ls "$dir/${pkg}"_*_"$arch".deb 2>/dev/null | sort -V | tail -1)
    bdeb=$(ls "$dir"/busybox-static_*_"$arch".deb 2>/dev/null | sort -V | tail -1)
    [ -n "$kdeb" ] || die "apt-get download $pkg$q failed"
    [ -n "$bdeb" ] || die "apt-get download busybox-static$q failed"
}

fetch() {
    mkdir -p "$cache/debs"
    if [ -f "$cache/kernel-package" ] && [ -f "$cache/busybox/bin/busybox" ] && [ "${AXVM_RIG_REFRESH:-0}" != 1 ]; then
        local pkg
        pkg=$(cat "$cache/kernel-package")
        if [ -f "$cache/$pkg/vmlinuz" ] && [ -f "$cache/$pkg/guest-modules/virtio_balloon.ko" ]; then
            echo "kvm-rig: cached: $pkg, busybox-static ($cache)"
            return
        fi
    fi
    local pkg kdeb bdeb
    pkg=$(kernel_package_or_update amd64)
    download_debs "$cache/debs" "$pkg" amd64

    # Unpack the kernel image, the four KVM modules and the guest's modules only (the
    # .deb holds ~400 MB of modules).
    local dir=$cache/$pkg tmp=$cache/$pkg.tmp
    rm -rf "$tmp" && mkdir -p "$tmp"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
        '*/virt/lib/irqbypass.ko' '*/arch/x86/kvm/kvm.ko' '*/drivers/crypto/ccp/ccp.ko' '*/arch/x86/kvm/kvm-amd.ko' \
        "${GUEST_MODULE_PATHS[@]}"
    take_guest_modules "$tmp/lib" "$tmp/guest-modules"
    mkdir -p "$tmp/modules"
    cp "$tmp"/boot/vmlinuz-* "$tmp/vmlinuz"
    cp "$tmp"/boot/config-* "$tmp/config"
    for m in irqbypass kvm ccp kvm-amd; do
        find "$tmp/lib" -name "$m.ko" -exec cp {} "$tmp/modules/" \;
        [ -f "$tmp/modules/$m.ko" ] || die "$m.ko not in $kdeb"
    done
    grep -q '^CONFIG_USERFAULTFD=y' "$tmp/config" || die "$pkg: CONFIG_USERFAULTFD is not y"
    rm -rf "$tmp/boot" "$tmp/lib" "$dir"
    mv "$tmp" "$dir"

    rm -rf "$cache/busybox" && mkdir -p "$cache/busybox"
    dpkg-deb -x "$bdeb" "$cache/busybox"
    echo "$pkg" > "$cache/kernel-package"
    echo "kvm-rig: fetched $(basename "$kdeb"), $(basename "$bdeb") into $cache"
}

kernel_dir() {
    [ -f "$cache/kernel-package" ] || die "nothing fetched yet: run $0 fetch"
    echo "$cache/$(cat "$cache/kernel-package")"
}

# --- build ---------------------------------------------------------------------------------

# Expected memtest checksum: sum over the qwords of [base, base+size) of (addr * golden) ^ seed,
# mod 2^64 (guests/lib.inc fill_page, guests/memtest.S read phase), as 16 hex digits.
resolve_expectations() {
    python3 - "$1" <<'EOF'
import re, sys
G, M = 0x9e3779b97f4a7c15, (1 << 64) - 1
def checksum(base, size, seed):
    s = 0
    for a in range(base, base + size, 8):
        s += ((a * G) & M) ^ seed
    return "%016x" % (s & M)
def size(x):
    return int(x[:-1]) << {"K": 10, "M": 20, "G": 30}[x[-1]] if x[-1] in "KMG" else int(x, 0)
memo = {}
def sub(m):
    key = m.group(1)
    if key not in memo:
        b, n, seed = key.split(",")
        memo[key] = checksum(size(b), size(n), int(seed, 0))
    return memo[key]
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    print(re.sub(r"@SUM\(([^)]*)\)@", sub, line))
EOF
}

# QEMU for the microvm peer of `axvm boot`: the binary, its libraries at the paths ldd
# names, and its firmware (microvm boots through qboot, bios-microvm.bin).
copy_qemu() {
    local root=$1 q
    q=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing: run scripts/setup.sh"
    mkdir -p "$root/usr/bin" "$root/usr/share"
    cp "$q" "$root/usr/bin/qemu-system-x86_64"
    ldd "$q" | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    cp -rL /usr/share/qemu "$root/usr/share/"
    if [ -d /usr/share/seabios ]; then cp -rL /usr/share/seabios "$root/usr/share/"; fi
}

# kut_into_root ARCH ROOT: kvm-unit-tests into the initramfs (AXVM_KUT: the suite's tarball or
# checkout; .ci/run passes it), built by scripts/kvm-unit-tests.sh: the tests and unittests.cfg
# at /kut/tests, the runner at /kut-run.sh. Without AXVM_KUT the rig's kut cases are skipped.
kut_into_root() {
    local arch=$1 root=$2
    if [ -z "${AXVM_KUT:-}" ]; then
        echo "kvm-rig: AXVM_KUT unset: no kvm-unit-tests in the rig (their cases are skipped)"
        return
    fi
    scripts/kvm-unit-tests.sh build "$AXVM_KUT" "$arch"
    mkdir -p "$root/kut"
    cp -r ".build-kut/$arch/tests" "$root/kut/tests"
    cp scripts/kut-run.sh "$root/kut-run.sh"
}

build_x86_64() {
    local kdir bb swift_bin
    kdir=$(kernel_dir)
    bb=$cache/busybox/bin/busybox
    [ -x "$bb" ] || die "busybox missing: run $0 fetch"
    swift_bin=$(dirname "$(command -v swiftc)")

    echo "kvm-rig: swift build (release, static Swift stdlib, .build-rig)"
    mkdir -p "$out"
    if ! swift build -c release --static-swift-stdlib --scratch-path .build-rig --product axvm > "$out/swift-build.log" 2>&1; then
        tail -40 "$out/swift-build.log"
        die "swift build failed (log: $out/swift-build.log)"
    fi
    tail -1 "$out/swift-build.log"
    scripts/build-guests.sh
    rm -rf "$out/root" && mkdir -p "$out/root"/{bin,sbin,proc,sys,dev,tmp,modules,guests,rig}
    local root=$out/root
    cp .build-rig/release/axvm "$root/axvm"
    "$swift_bin/llvm-objcopy" --strip-all "$root/axvm"
    "$swift_bin/clang" -O2 -static -o "$root/baseline" Benchmarks/uffd-baseline/baseline.c -lpthread
    "$swift_bin/clang" -O2 -static -o "$out/diskbench" Benchmarks/diskbench/diskbench.c
    "$swift_bin/clang" -O2 -static -o "$root/bin/api-request" Benchmarks/api-request/api-request.c
    # What a static-stdlib Swift binary still needs: glibc, libstdc++, libgcc_s and the
    # dynamic loader, at the paths ldd names.
    ldd .build-rig/release/axvm | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    cp "$bb" "$root/bin/busybox"
    cp "$kdir"/modules/*.ko "$root/modules/"
    cp guests/build/*.bin "$root/guests/"
    # Linux on axvm: the same Debian kernel as the guest, a busybox initramfs for it, and
    # QEMU for the microvm peer (AXVM_RIG_NO_QEMU=1 leaves it out: 15 MB less).
    mkdir -p "$root/linux"
    cp "$kdir/vmlinuz" "$root/linux/vmlinuz"
    BUSYBOX=$bb GUEST_MODULES=$kdir/guest-modules DISKBENCH=$out/diskbench scripts/linux-guest-initramfs.sh "$root/linux/initramfs.cpio.gz" > /dev/null
    BUSYBOX=$bb scripts/linux-guest-rootfs.sh "$root/linux/root.img" > /dev/null
    [ "${AXVM_RIG_NO_QEMU:-0}" = 1 ] || copy_qemu "$root"
    kut_into_root x86_64 "$root"
    cp rig/init.sh "$root/init"
    chmod +x "$root/init"
    resolve_expectations rig/expected-x86_64.txt > "$root/rig/expected.txt"
    cp rig/expected-x86_64.txt "$root/rig/"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) | gzip -1 > "$out/initramfs.cpio.gz"
    cp "$kdir/vmlinuz" "$out/vmlinuz"
    cp "$root/rig/expected.txt" "$out/expected.txt"
    echo "kvm-rig: $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1)), kernel $(cat "$cache/kernel-package")"
}

# --- boot ----------------------------------------------------------------------------------

qemu_x86_64() {  # sets qemu=(command line); arguments: extra kernel parameters
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run scripts/setup.sh"
    [ -f "$out/initramfs.cpio.gz" ] || die "no initramfs: run $0 build x86_64"
    # -smp 1: at -smp 2 the outer kernel hung in KVM's "disable SVM" IPI (kvm-rigs.md).
    qemu=(qemu-system-x86_64 -machine q35 -accel tcg -cpu qemu64,+svm,+npt -m 4G -smp 1
          -nographic -no-reboot -nic none -kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.gz"
          -append "console=ttyS0 rdinit=/init panic=-1 quiet${AXVM_RIG_HANG:+ rig_hang=$AXVM_RIG_HANG} $*")
    # ttyS0 the console (what -nographic gives), ttyS1 the control socket (rig_threads).
    qemu+=(-serial stdio -serial "unix:$(control_socket),server,nowait" -monitor "unix:$(monitor_socket),server,nowait")
}

# monitor_socket: where the rig's QEMU monitor listens (AXVM_RIG_MONITOR, default in the build
# directory), for rig_watch and for looking at a rig by hand (monitor_query). control_socket:
# beside it, the rig's second serial port (x86_64: ttyS1), where rig/init.sh's answer_requests
# tells what axvm's threads are doing (rig_threads).
monitor_socket() { echo "${AXVM_RIG_MONITOR:-$out/monitor.sock}"; }
control_socket() { local m; m=$(monitor_socket); echo "${m%.sock}-control.sock"; }

# socket_talk SOCKET END WAIT HEAD LINE...: sends each LINE to a unix socket and prints what
# comes back until END (a regular expression, at the end of the answer) or WAIT seconds, after
# HEAD LINE if HEAD is not empty; what the socket says on connecting goes unprinted. Escapes,
# CRs and the echo of LINE go.
socket_talk() {
    python3 - "$@" <<'PY'
import re, socket, sys, time
path, end, wait, head, lines = sys.argv[1], re.compile(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
def answer(limit):
    out, t = "", time.time() + limit
    while time.time() < t:
        s.settimeout(max(0.05, t - time.time()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d.decode(errors="replace")
        if end.search(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", out)):
            break
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", out)
answer(2)
for line in lines:
    s.send((line + "\n").encode())
    if head:
        print(head + line)
    text = end.sub("", answer(wait))
    print("\n".join(l for l in text.split("\n") if l.strip() and not l.endswith(line)))
PY
}

# monitor_query SOCKET COMMAND...: QEMU monitor commands' output.
monitor_query() {
    local sock=$1; shift
    socket_talk "$sock" '\(qemu\) $' 10 '(qemu) ' "$@"
}

# rig_threads: rig/init.sh's thread_dump through the control socket ("rig-dump: " lines), or
# nothing if the rig kernel does not answer within 30 s.
rig_threads() {
    socket_talk "$(control_socket)" 'rig-dump: end\n' 30 '' rig-dump-request | grep '^rig-dump: '
}

# rig_watch LOG: runs beside a rig boot and ends a rig that makes no progress, saying what it
# was doing (rig_stop). rig/init.sh prints "rig-case: NAME timeout=SECONDS" before each case:
# - hung: the console (LOG's last write) silent for longer than the current case's timeout
#   (before the first case: 120 s, for the kernel's boot) plus AXVM_RIG_MARGIN (60) seconds.
#   Leaves "$out/hung". A slow case that prints, or ends within that, is no hang.
# - stalled: QEMU has used no CPU time for 60 s: its emulated CPU is halted with nothing to wake
#   it, not even the rig kernel's timer, which every case's own timeout needs. Seen in 2 of
#   ~100 Linux boots in the kvm_amd rig (both with a second rig running beside it): QEMU 7.2's
#   TCG had the rig kernel halted (EFER.SVME set: the outer kernel, not axvm's guest) with IF
#   set and the LAPIC timer's vector requested, and an NMI from the monitor did not wake it
#   either, as if its SVM global interrupt flag were left clear. Leaves "$out/stalled"
#   (rig_boot_retrying boots once more).
rig_watch() {
    local log=$1 margin=${AXVM_RIG_MARGIN:-60} pid="" cpu last=-1 cpu_at now quiet name limit i
    for i in $(seq 100); do
        pid=$(pgrep -f "^qemu-system-[a-z0-9_]+ .*unix:$(monitor_socket),server" | head -1)
        [ -n "$pid" ] && break
        sleep 0.2
    done
    [ -n "$pid" ] || return 0
    cpu_at=$(date +%s)
    while cpu=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null); do
        now=$(date +%s)
        if [ "$cpu" != "$last" ]; then last=$cpu; cpu_at=$now; fi
        if [ $((now - cpu_at)) -ge 60 ]; then
            rig_stop "$pid" stalled "STALL: QEMU has used no CPU time for 60 s: the rig's emulated CPU is halted and nothing wakes it (a QEMU TCG stop, not a spinning guest)"
            return 0
        fi
        quiet=$((now - $(stat -c %Y "$log" 2>/dev/null || echo "$now")))
        read -r name limit < <(sed -n 's/^rig-case: \([^ ]*\) timeout=\([0-9]*\)$/\1 \2/p' "$log" 2>/dev/null | tail -1; echo "(boot) 120")
        if [ "$quiet" -gt $((limit + margin)) ]; then
            rig_stop "$pid" hung "HANG: case $name has printed nothing for $quiet s (its timeout $limit s + margin $margin s, AXVM_RIG_MARGIN)"
            return 0
        fi
        sleep 5
    done
}

# rig_stop PID MARK MESSAGE: says MESSAGE, QEMU's view of the CPU (monitor) and the rig
# kernel's of axvm's threads (rig_threads), ends QEMU (PID) and leaves MESSAGE in "$out/MARK".
rig_stop() {
    local pid=$1 mark=$2 msg=$3 threads
    echo "kvm-rig: $msg; QEMU's view of the CPU:"
    monitor_query "$(monitor_socket)" "info status" "info cpus" "info registers" "info lapic" \
        | grep -Ev '^(FCW|FPR|XMM|YMM|ZMM|DR[0-7])' | sed 's/^/kvm-rig:   /'
    if threads=$(rig_threads 2>/dev/null) && [ -n "$threads" ]; then
        echo "kvm-rig: what the rig's processes are doing (its init's answer on the control socket):"
        printf '%s\n' "$threads" | sed 's/^/kvm-rig:   /'
    else
        echo "kvm-rig: no answer from the rig kernel on the control socket within 30 s (x86_64's ttyS1, rig/init.sh's answer_requests)"
    fi
    echo "$msg" > "$out/$mark"
    kill "$pid" 2>/dev/null
}

# rig_boot LOG LIMIT: runs "${qemu[@]}" beside rig_watch, with a LIMIT-second outer bound (0:
# none), its console cleaned and saved in LOG; sets rig_qstatus (QEMU's status, 124: over the
# bound), rig_total (seconds QEMU ran) and rig_boot (seconds from QEMU start to init's first
# line, "?" if none).
rig_boot() {
    local log=$1 limit=$2 start end
    rm -f "$out/init-time" "$out/stalled" "$out/hung"
    start=$(date +%s.%N)
    echo "kvm-rig: booting (a case silent for its timeout + ${AXVM_RIG_MARGIN:-60} s is a hang; outer bound $limit s), log in $log"
    set +e
    : > "$log"
    rig_watch "$log" &
    local watcher=$!
    # The firmware and kernel's terminal escapes and CRs go, so lines compare as text.
    timeout "$limit" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r//g' \
        | while IFS= read -r line; do   # note when init starts, for the boot time
            case $line in *"rig: init at "*) date +%s.%N > "$out/init-time" ;; esac
            printf '%s\n' "$line"
        done | tee "$log"
    rig_qstatus=${PIPESTATUS[0]}
    kill $watcher 2>/dev/null; wait $watcher 2>/dev/null
    set -e
    end=$(date +%s.%N)
    rig_total=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    rig_boot=$( [ -f "$out/init-time" ] && awk -v a="$start" -v b="$(cat "$out/init-time")" 'BEGIN { printf "%.1f", b - a }' || echo "?")
    echo "kvm-rig: QEMU ran $rig_total s"
}

# rig_finished LOG LIMIT: after rig_boot, whether the rig ran to its end ("RIG DONE").
rig_finished() {
    local mark
    for mark in stalled hung; do
        if [ -f "$out/$mark" ]; then
            echo "kvm-rig: FAIL: $(cat "$out/$mark") (its state above)"
            return 1
        fi
    done
    if [ "$rig_qstatus" = 124 ]; then
        echo "kvm-rig: FAIL: still running after the outer bound of $2 s (AXVM_RIG_TIMEOUT), though no case was silent for long"
        return 1
    fi
    grep -qx 'RIG DONE' "$1" || { echo "kvm-rig: FAIL: the rig did not finish (QEMU status $rig_qstatus)"; return 1; }
}

# rig_boot_retrying LOG LIMIT: rig_boot, and once more if the emulator stalled (rig_watch:
# a QEMU TCG stop, outside axvm and its guests; a second one fails the run).
rig_boot_retrying() {
    rig_boot "$1" "$2"
    if [ -f "$out/stalled" ]; then
        cp "$1" "$1.stalled"
        echo "kvm-rig: the emulator stalled (log kept in $1.stalled): booting the rig once more"
        rig_boot "$1" "$2"
    fi
}

test_x86_64() {
    local log=$out/test.log status=0 limit=${AXVM_RIG_TIMEOUT:-3600}
    local -a qemu
    qemu_x86_64 rig=test
    rig_boot_retrying "$log" "$limit"
    rig_finished "$log" "$limit" || return 1
    save_rig_files "$log"
    compare_x86_64 "$log" || status=1
    echo "kvm-rig: timings: QEMU start to init $rig_boot s (kernel uptime at init" \
        "$(sed -n 's/^rig: init at \([0-9.]*\) s.*/\1/p' "$log") s), suite $(sed -n 's/^rig: suite took \([0-9.]*\) s/\1/p' "$log") s, QEMU total $rig_total s"
    return $status
}

# save_rig_files LOG: each file the rig printed between "rig-file-begin NAME" and
# "rig-file-end" (e.g. the Linux boot's --fault-map picture) into $out/files/NAME.
save_rig_files() {
    mkdir -p "$out/files"
    tr -d '\r' < "$1" | awk -v dir="$out/files" '
        /^rig-file-begin / { f = dir "/" $2; printf "" > f; next }
        /^rig-file-end$/ { if (f != "") { close(f); print "kvm-rig: saved " f }; f = ""; next }
        f != "" { print > f }'
}

# check_root_image LOG LABEL: the ext4 root image the rig's linux-root cases used (printed as
# rig file root.img.gz.b64), checked here with the host's e2fsprogs: the file system is clean
# (e2fsck -fn) and /data/file has the MD5 the guest kept in /data/md5 when it wrote it.
check_root_image() {
    local log=$1 label=$2 img=$out/files/root-$2.img kept now
    grep -q '^rig-file-begin root.img.gz.b64' "$log" || { echo "kvm-rig: $label: no root image in the log"; return 1; }
    mkdir -p "$out/files"
    tr -d '\r' < "$log" | awk '/^rig-file-begin root.img.gz.b64$/ { f = 1; next } /^rig-file-end$/ { f = 0 } f' \
        | base64 -d | gunzip > "$img" || { echo "kvm-rig: $label: the root image in the log does not decode"; return 1; }
    if ! e2fsck -fn "$img" > "$img.fsck" 2>&1; then
        echo "kvm-rig: $label: e2fsck -fn finds the guest's root file system damaged:"; tail -5 "$img.fsck"; return 1
    fi
    kept=$(debugfs -R 'cat /data/md5' "$img" 2>/dev/null)
    now=$(debugfs -R 'cat /data/file' "$img" 2>/dev/null | md5sum | cut -c1-32)
    if [ -z "$kept" ] || [ "$kept" != "$now" ]; then
        echo "kvm-rig: $label: /data/file in the root image has MD5 $now, the guest wrote ${kept:-nothing}"; return 1
    fi
    echo "kvm-rig: $label: root image clean (e2fsck -fn), /data/file as the guest wrote it (debugfs, MD5 $now)"
}

# compare_x86_64 [LOG [linux]]: the rig's output (default: the last test's) against
# rig/expected-x86_64.txt (with `linux`: its Linux lines only, for the linux verb).
compare_x86_64() {
    local log=${1:-$out/test.log} only=${2:-}
    [ -f "$log" ] || die "no log $log: run $0 test x86_64"
    # The build's copy has the checksums resolved; resolve again if the template changed.
    if [ "$only" = linux ]; then
        resolve_expectations rig/expected-x86_64.txt | grep -E '^(\[linux|linux-|\[qemu-microvm\])' > "$out/expected.txt"
    else
        resolve_expectations rig/expected-x86_64.txt > "$out/expected.txt"
    fi
    local status=0
    check_log "$log" "$out/expected.txt" rig/expected-x86_64.txt x86_64 || status=1
    check_root_image "$log" x86_64 || status=1
    return $status
}

# check_log LOG RESOLVED TEMPLATE LABEL: every line of RESOLVED (expectations, checksums
# resolved) must appear in LOG as a whole line, except those of a case the rig skipped (the
# case: the text before the first colon, or the name in brackets of a "[case] output" line);
# and no row of the results table may say FAIL.
check_log() {
    local log=$1 resolved=$2 template=$3 label=$4 missing=0 name status=0
    while IFS= read -r line; do
        grep -qxF -- "$line" "$log" && continue
        name=${line%%:*}
        case $line in "["*"] "*) name=${line#[}; name=${name%%]*} ;; esac
        if grep -qx -- "$name: skipped.*" "$log"; then continue; fi
        [ $missing = 0 ] && echo "kvm-rig: expected lines missing from the rig's output:"
        echo "  - $line"
        missing=$((missing + 1))
    done < "$resolved"
    [ $missing = 0 ] || status=1
    if grep -q '^| .* | FAIL |' "$log"; then
        echo "kvm-rig: failed cases (their lines are not in $template), with what they printed:"
        tr -d '\r' < "$log" | grep '^| .* | FAIL |' | while IFS= read -r row; do
            echo "$row"
            name=$(echo "$row" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
            tr -d '\r' < "$log" | grep -F -e "$name: " | grep -v '^|' | sed 's/^/    /'
        done
        status=1
    fi
    if [ $status = 0 ]; then
        echo "kvm-rig: $label: every expected line present ($(wc -l < "$resolved") lines)"
    fi
    return $status
}

# linux_x86_64 [ROUNDS]: only the Linux cases and ROUNDS (default 3) interleaved boots of
# axvm lazy, axvm populated and QEMU microvm, for the comparison in the README.
linux_x86_64() {
    local log=$out/linux.log rounds=${1:-3}
    local limit=${AXVM_RIG_TIMEOUT:-$((3600 + rounds * 600))}
    local -a qemu
    qemu_x86_64 rig=linux rig_rounds=$rounds
    echo "kvm-rig: booting for the Linux cases and $rounds comparison rounds"
    rig_boot "$log" "$limit"
    rig_finished "$log" "$limit" || return 1
    save_rig_files "$log"
    compare_x86_64 "$log" linux
}

# soak_x86_64 [N] [AXVM BOOT ARGS...]: N (default 10) lazy Linux boots in a row, one line each
# (exit, time to init, the UART resampler's counters); a failed boot shows its console's tail
# and axvm's report. Arguments go to every `axvm boot` (no spaces or commas inside one).
soak_x86_64() {
    local log=$out/soak.log n=${1:-10} args
    shift $(($# < 1 ? $# : 1))
    args=$(IFS=,; echo "$*")
    local limit=${AXVM_RIG_TIMEOUT:-$((3600 + n * 600))}
    local -a qemu
    qemu_x86_64 rig=soak rig_rounds=$n ${args:+rig_args=$args}
    echo "kvm-rig: booting for $n Linux boots"
    rig_boot "$log" "$limit"
    rig_finished "$log" "$limit" || return 1
    grep -q '^rig: soak: 0 of ' "$log"
}

shell_x86_64() {
    echo "kvm-rig: booting to a shell; 'poweroff -f' or Ctrl-A x to leave"
    local -a qemu
    qemu_x86_64 rig=shell
    "${qemu[@]}"
}

# --- arm64 ---------------------------------------------------------------------------------
# KVM at EL2 (kvm-rigs.md, "arm64: KVM at EL2"): Debian's arm64 kernel (KVM built in) under
# qemu-system-aarch64 -M virt,virtualization=on, TCG. -cpu max,pauth-impdef=on gives VHE
# (the kernel runs at EL2), -cpu cortex-a57 nVHE (the kernel at EL1, KVM's hyp code at EL2).
# Cache: $cache/arm64, laid out as the x86 one.
cache_a64=$cache/arm64
A64_CPUS="max cortex-a57"

fetch_aarch64() {
    mkdir -p "$cache_a64/debs"
    if [ -f "$cache_a64/kernel-package" ] && [ -f "$cache_a64/busybox/bin/busybox" ] && [ "${AXVM_RIG_REFRESH:-0}" != 1 ]; then
        local pkg
        pkg=$(cat "$cache_a64/kernel-package")
        if [ -f "$cache_a64/$pkg/vmlinuz" ] && [ -f "$cache_a64/$pkg/guest-modules/virtio_balloon.ko" ]; then
            echo "kvm-rig: cached: $pkg, busybox-static:arm64 ($cache_a64)"
            return
        fi
    fi
    # apt knows arm64 packages only with the architecture added (scripts/setup.sh does).
    dpkg --print-foreign-architectures | grep -qx arm64 || die "dpkg has no arm64 architecture: run scripts/setup.sh"
    local pkg kdeb bdeb
    pkg=$(kernel_package_or_update arm64)
    download_debs "$cache_a64/debs" "$pkg" arm64

    # The kernel image, its config and the guest's virtio modules (KVM is built in; so may the
    # virtio drivers be: then there is no module to take, and the guest needs none).
    local dir=$cache_a64/$pkg tmp=$cache_a64/$pkg.tmp
    rm -rf "$tmp" && mkdir -p "$tmp"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
        "${GUEST_MODULE_PATHS[@]}" 2>/dev/null || true
    [ -n "$(ls "$tmp"/boot/vmlinuz-* 2>/dev/null)" ] || die "no kernel image in $kdeb"
    ALLOW_BUILTIN=1 take_guest_modules "$tmp" "$tmp/guest-modules"
    rm -rf "$tmp/lib"
    cp "$tmp"/boot/vmlinuz-* "$tmp/vmlinuz"
    cp "$tmp"/boot/config-* "$tmp/config"
    local opt
    for opt in CONFIG_KVM CONFIG_USERFAULTFD CONFIG_HAVE_ARCH_USERFAULTFD_MINOR; do
        grep -q "^$opt=y" "$tmp/config" || die "$pkg: $opt is not y"
    done
    rm -rf "$tmp/boot" "$dir"
    mv "$tmp" "$dir"

    rm -rf "$cache_a64/busybox" && mkdir -p "$cache_a64/busybox"
    dpkg-deb -x "$bdeb" "$cache_a64/busybox"
    echo "$pkg" > "$cache_a64/kernel-package"
    echo "kvm-rig: fetched $(basename "$kdeb"), $(basename "$bdeb") into $cache_a64"
}

# is_static_aarch64 FILE: an ELF for AArch64 (e_machine 183) with no program interpreter.
is_static_aarch64() {
    [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] || return 1
    [ "$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')" = 183 ] || return 1
    ! "$(dirname "$(command -v swiftc)")/llvm-objdump" -p "$1" | grep -q '^ *INTERP '
}

# cpio_newc DIR: DIR's tree as a cpio "newc" archive on stdout (scripts/cpio-newc.py).
cpio_newc() { python3 scripts/cpio-newc.py "$1"; }

build_aarch64() {
    local kdir bb swift_bin axvm
    [ -f "$cache_a64/kernel-package" ] || die "nothing fetched for arm64 yet: run $0 fetch aarch64"
    kdir=$cache_a64/$(cat "$cache_a64/kernel-package")
    bb=$cache_a64/busybox/bin/busybox
    [ -f "$kdir/vmlinuz" ] && [ -f "$bb" ] || die "arm64 kernel or busybox missing: run $0 fetch aarch64"
    swift_bin=$(dirname "$(command -v swiftc)")
    mkdir -p "$out"

    # axvm: a static Embedded Swift binary (no aarch64 Linux Swift runtime exists here).
    if [ -n "${AXVM_RIG_AXVM:-}" ]; then
        axvm=$AXVM_RIG_AXVM
        echo "kvm-rig: axvm: $axvm (AXVM_RIG_AXVM), not built"
    elif [ -x scripts/build-static.sh ]; then
        echo "kvm-rig: scripts/build-static.sh aarch64"
        if ! scripts/build-static.sh aarch64 > "$out/build-static.log" 2>&1; then
            tail -40 "$out/build-static.log"
            die "scripts/build-static.sh aarch64 failed (log: $out/build-static.log)"
        fi
        axvm=.build-static/aarch64/axvm
    else
        die "scripts/build-static.sh is missing: it builds the static aarch64 axvm (.build-static/aarch64/axvm); or name a static aarch64 binary in AXVM_RIG_AXVM"
    fi
    [ -f "$axvm" ] || die "no axvm at $axvm"
    is_static_aarch64 "$axvm" || die "$axvm is not a static AArch64 ELF binary"

    # The guests: guests/aarch64/*.S built by scripts/build-guests.sh, or the .bin files of
    # the directory AXVM_RIG_GUESTS names (nothing built then).
    local guests=${AXVM_RIG_GUESTS:-guests/build/aarch64}
    if [ -z "${AXVM_RIG_GUESTS:-}" ]; then scripts/build-guests.sh; fi
    if ! ls "$guests"/*.bin >/dev/null 2>&1; then
        echo "kvm-rig: warning: no AArch64 guests in $guests (scripts/build-guests.sh builds guests/aarch64/*.S); their cases will be skipped"
    fi

    rm -rf "$out/root" && mkdir -p "$out/root"/{bin,sbin,proc,sys,dev,tmp,guests,rig}
    local root=$out/root
    cp "$axvm" "$root/axvm"
    "$swift_bin/llvm-objcopy" --strip-all "$root/axvm"
    "$swift_bin/clang" --target=aarch64-linux-gnu -static -fuse-ld=lld -pthread -O2 \
        -o "$root/baseline" Benchmarks/uffd-baseline/baseline.c \
        || die "the aarch64 C baseline does not build (static arm64 glibc missing? run scripts/setup.sh)"
    "$swift_bin/llvm-objcopy" --strip-all "$root/baseline"
    "$swift_bin/clang" --target=aarch64-linux-gnu -static -fuse-ld=lld -O2 -o "$out/diskbench" Benchmarks/diskbench/diskbench.c
    "$swift_bin/clang" --target=aarch64-linux-gnu -static -fuse-ld=lld -O2 -o "$root/bin/api-request" Benchmarks/api-request/api-request.c
    cp "$bb" "$root/bin/busybox"
    if ls "$guests"/*.bin >/dev/null 2>&1; then cp "$guests"/*.bin "$root/guests/"; fi
    # Linux on axvm: the same Debian kernel as the rig's (an uncompressed Image), and a
    # busybox initramfs for it.
    mkdir -p "$root/linux"
    cp "$kdir/vmlinuz" "$root/linux/vmlinuz"
    BUSYBOX=$bb GUEST_MODULES=$kdir/guest-modules DISKBENCH=$out/diskbench scripts/linux-guest-initramfs.sh "$root/linux/initramfs.cpio.gz" > /dev/null
    BUSYBOX=$bb scripts/linux-guest-rootfs.sh "$root/linux/root.img" > /dev/null
    # Debian's arm64 QEMU for the peer boot (AXVM_RIG_NO_QEMU=1 leaves it out: 52 MiB less).
    if [ "${AXVM_RIG_NO_QEMU:-0}" != 1 ]; then
        echo "kvm-rig: scripts/qemu-arm64-sysroot.sh (Debian's arm64 QEMU for the peer)"
        AXVM_QEMU_CHECK=0 scripts/qemu-arm64-sysroot.sh "$root" > "$out/qemu-sysroot.log" 2>&1 \
            || { tail -20 "$out/qemu-sysroot.log"; die "scripts/qemu-arm64-sysroot.sh failed (log: $out/qemu-sysroot.log)"; }
    fi
    kut_into_root aarch64 "$root"
    cp rig/init.sh "$root/init"
    chmod +x "$root/init"
    resolve_expectations rig/expected-aarch64.txt > "$root/rig/expected.txt"
    cp rig/expected-aarch64.txt "$root/rig/"
    # The arm64 busybox does not run here: the archive is written by cpio_newc.
    cpio_newc "$root" | gzip -1 > "$out/initramfs.cpio.gz"
    cp "$kdir/vmlinuz" "$out/vmlinuz"
    cp "$root/rig/expected.txt" "$out/expected.txt"
    echo "kvm-rig: $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1)), kernel $(cat "$cache_a64/kernel-package")," \
        "guests: $(ls "$root/guests" | tr '\n' ' ')"
}

# -smp 1: the fault thread then always runs on the vCPU thread's CPU. Under TCG a wake-up of
# a thread on the other emulated CPU costs ~10x (kvm-rigs.md); AXVM_RIG_SMP=2 boots two CPUs,
# and rig/init.sh then pins axvm and the baseline to CPU 0 with taskset (AXVM_RIG_PIN=0: not).
qemu_aarch64() {  # sets qemu=(command line); arguments: CPU model, extra kernel parameters
    local cpu=$1 model
    shift
    case $cpu in
        max) model=max,pauth-impdef=on ;;   # pauth-impdef: cheap pointer authentication under TCG
        cortex-a57) model=cortex-a57 ;;
        *) die "CPU model $cpu: max or cortex-a57" ;;
    esac
    command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 missing: run scripts/setup.sh"
    [ -f "$out/initramfs.cpio.gz" ] || die "no initramfs: run $0 build aarch64"
    qemu=(qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -accel tcg -cpu "$model" -m 2G
          -smp "${AXVM_RIG_SMP:-1}" -nographic -no-reboot -nic none -kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.gz"
          -append "console=ttyAMA0 rdinit=/init panic=-1 quiet rig_cpu=$cpu$([ "${AXVM_RIG_PIN:-1}" = 1 ] || echo ' rig_nopin')${AXVM_RIG_HANG:+ rig_hang=$AXVM_RIG_HANG} $*"
          -monitor "unix:$(monitor_socket),server,nowait")
}

a64_cpus() {  # the CPU models a test/compare argument names
    case ${1:-both} in
        both) echo "$A64_CPUS" ;;
        max|cortex-a57) echo "$1" ;;
        *) die "CPU model $1: max, cortex-a57 or both" ;;
    esac
}

# expected_for_cpu CPU < RESOLVED: the expectations of one CPU model. Lines starting with
# "{max} " or "{cortex-a57} " hold for that model only (the prefix goes), the others for both.
expected_for_cpu() {
    sed -n "/^{/!p; s/^{$1} //p"
}

test_aarch64() {
    local cpu status=0 limit=${AXVM_RIG_TIMEOUT:-3600} summary=""
    local -a qemu
    for cpu in $(a64_cpus "${1:-both}"); do
        local log=$out/test-$cpu.log
        echo "kvm-rig: arm64, -cpu $cpu"
        qemu_aarch64 "$cpu" rig=test
        rig_boot_retrying "$log" "$limit"
        rig_finished "$log" "$limit" || { status=1; continue; }
        save_rig_files "$log"  # the Linux boot's fault map: files/linux-faults-CPU.svg
        compare_aarch64 "$cpu" || status=1
        summary="$summary
kvm-rig: timings ($cpu): QEMU start to init $rig_boot s (kernel uptime at init $(sed -n 's/^rig: init at \([0-9.]*\) s.*/\1/p' "$log") s), suite $(sed -n 's/^rig: suite took \([0-9.]*\) s/\1/p' "$log") s, QEMU total $rig_total s"
    done
    [ -z "$summary" ] || echo "${summary#?}"
    return $status
}

# compare_aarch64 [max|cortex-a57|both]: the saved logs (test-CPU.log) against
# rig/expected-aarch64.txt. A case the rig skipped because its guest is missing fails here
# unless AXVM_RIG_PARTIAL=1 (while guests/aarch64 is being written).
compare_aarch64() {
    local cpu status=0 log skipped
    for cpu in $(a64_cpus "${1:-both}"); do
        log=$out/test-$cpu.log
        [ -f "$log" ] || die "no log $log: run $0 test aarch64 $cpu"
        resolve_expectations rig/expected-aarch64.txt | expected_for_cpu "$cpu" > "$out/expected-$cpu.txt"
        check_log "$log" "$out/expected-$cpu.txt" rig/expected-aarch64.txt "aarch64 -cpu $cpu" || status=1
        check_root_image "$log" "aarch64-$cpu" || status=1
        skipped=$(grep -c '^[a-z0-9-]*: skipped (guest .* absent)' "$log" || true)
        if [ "$skipped" -gt 0 ]; then
            echo "kvm-rig: aarch64 -cpu $cpu: $skipped case(s) skipped for a missing guest:"
            grep '^[a-z0-9-]*: skipped (guest .* absent)' "$log" | sed 's/^/  /'
            [ "${AXVM_RIG_PARTIAL:-0}" = 1 ] || status=1
        fi
    done
    return $status
}

# linux_aarch64 [max|cortex-a57] [ROUNDS]: only the arm64 Linux cases (and ROUNDS, default 1,
# interleaved boots of axvm and QEMU), on one CPU model (default max); not compared with the
# expectations (the full test does that).
linux_aarch64() {
    local cpu=${1:-max} rounds=${2:-1} log
    log=$out/linux-$cpu.log
    local limit=${AXVM_RIG_TIMEOUT:-$((3600 + rounds * 900))}
    local -a qemu
    qemu_aarch64 "$cpu" rig=linux rig_rounds=$rounds
    echo "kvm-rig: arm64 -cpu $cpu, booting for the Linux cases and $rounds comparison round(s)"
    rig_boot "$log" "$limit"
    rig_finished "$log" "$limit"
}

# rig_table LOG FIRST LIMIT: boots the rig qemu_* set up, waits up to LIMIT seconds for it to
# finish and prints its table: from the line starting FIRST to RIG DONE.
rig_table() {
    rig_boot "$1" "$3"
    rig_finished "$1" "$3" || return 1
    tr -d '\r' < "$1" | sed -n "/^$2/,/^RIG DONE\$/p" | grep -v '^RIG DONE'
}

# disk_x86_64 [ROUNDS] / disk_aarch64 [CPU] [ROUNDS]: the disk benchmark only (rig/init.sh
# disk_bench): Benchmarks/diskbench in the guest on a virtio-blk disk, axvm against QEMU
# (microvm on x86, virt on arm64) with virtio-blk-device on the same image, ROUNDS (3)
# interleaved rounds; the table is in the log and printed at the end.
disk_x86_64() {
    local rounds=${1:-3} log=$out/disk.log
    local -a qemu
    qemu_x86_64 rig=disk rig_rounds=$rounds
    echo "kvm-rig: booting for $rounds disk benchmark rounds"
    rig_table "$log" "Disk, " "${AXVM_RIG_TIMEOUT:-$((1800 + rounds * 900))}"
}

# sandbox_x86_64 [ROUNDS] / sandbox_aarch64 [CPU] [ROUNDS]: what the sandbox costs a Linux boot
# (rig/init.sh: lazy 64 KiB with the filters and with --no-sandbox, ROUNDS (5) interleaved
# rounds); the table is printed at the end.
sandbox_x86_64() {
    local rounds=${1:-5} log=$out/sandbox.log
    local -a qemu
    qemu_x86_64 rig=sandbox rig_rounds=$rounds
    echo "kvm-rig: booting for $rounds rounds of Linux boots with and without the sandbox"
    rig_table "$log" "Linux boot, " "${AXVM_RIG_TIMEOUT:-$((900 + rounds * 120))}"
}

# kut_x86_64|kut_riscv64 [NAME...] / kut_aarch64 [CPU] [NAME...]: every default entry of kvm-unit-tests (or
# NAME...) on axvm and on QEMU in the rig (rig/init.sh kut_table; build the rig with AXVM_KUT),
# time limits the suite's times AXVM_KUT_SCALE (1); the table is printed at the end.
kut_x86_64() { kut_plain x86_64 "$@"; }
kut_riscv64() { kut_plain riscv64 "$@"; }
kut_plain() {  # kut_plain ARCH [NAME...]: the rigs whose QEMU takes no CPU model argument
    local arch=$1 log=$out/kut.log names
    shift
    names=$(IFS=,; echo "$*")
    local -a qemu
    "qemu_$arch" rig=kut rig_scale="${AXVM_KUT_SCALE:-1}" ${names:+rig_args=$names}
    echo "kvm-rig: $arch, booting for kvm-unit-tests on axvm and on QEMU"
    rig_table "$log" "kvm-unit-tests, " "${AXVM_RIG_TIMEOUT:-14400}"
}

kut_aarch64() {
    local cpu=${1:-max} log names
    shift $(($# < 1 ? $# : 1))
    names=$(IFS=,; echo "$*")
    log=$out/kut-$cpu.log
    local -a qemu
    qemu_aarch64 "$cpu" rig=kut rig_scale="${AXVM_KUT_SCALE:-1}" ${names:+rig_args=$names}
    echo "kvm-rig: arm64 -cpu $cpu, booting for kvm-unit-tests on axvm and on QEMU"
    rig_table "$log" "kvm-unit-tests, " "${AXVM_RIG_TIMEOUT:-14400}"
}

sandbox_aarch64() {
    local cpu=${1:-max} rounds=${2:-5} log
    log=$out/sandbox-$cpu.log
    local -a qemu
    qemu_aarch64 "$cpu" rig=sandbox rig_rounds=$rounds
    echo "kvm-rig: arm64 -cpu $cpu, booting for $rounds rounds of Linux boots with and without the sandbox"
    rig_table "$log" "Linux boot, " "${AXVM_RIG_TIMEOUT:-$((900 + rounds * 150))}"
}

disk_aarch64() {
    local cpu=${1:-max} rounds=${2:-3} log
    log=$out/disk-$cpu.log
    local -a qemu
    qemu_aarch64 "$cpu" rig=disk rig_rounds=$rounds
    echo "kvm-rig: arm64 -cpu $cpu, booting for $rounds disk benchmark rounds"
    rig_table "$log" "Disk, " "${AXVM_RIG_TIMEOUT:-$((1800 + rounds * 1200))}"
}

# balloon_x86_64 / balloon_aarch64 [CPU]: free page reporting on axvm and on QEMU (rig/init.sh
# balloon_compare); the table, and docs/balloon-ARCH.svg drawn from the samples
# (scripts/balloon-plot.py).
balloon_run() {  # balloon_run LOG LABEL: after the rig booted, the table and the plot
    local log=$1 label=$2
    save_rig_files "$log" > /dev/null
    tr -d '\r' < "$log" | sed -n '/^Free page reporting: /,/^RIG DONE$/p' | grep -v '^RIG DONE'
    tr -d '\r' < "$log" | grep '^\[balloon-storm\] \|^rig: balloon-storm'
    python3 scripts/balloon-plot.py "$out/files" "$label" > "$out/balloon-$label.svg" \
        && echo "kvm-rig: $out/balloon-$label.svg (copy it to docs/ to publish it)"
}

balloon_x86_64() {
    local log=$out/balloon.log
    local -a qemu
    qemu_x86_64 rig=balloon
    echo "kvm-rig: booting for the free page reporting comparison"
    rig_boot "$log" "${AXVM_RIG_TIMEOUT:-3600}"
    rig_finished "$log" "${AXVM_RIG_TIMEOUT:-3600}" || return 1
    balloon_run "$log" x86_64
}

balloon_aarch64() {
    local cpu=${1:-max} log
    log=$out/balloon-$cpu.log
    local -a qemu
    qemu_aarch64 "$cpu" rig=balloon
    echo "kvm-rig: arm64 -cpu $cpu, booting for the free page reporting comparison"
    rig_boot "$log" "${AXVM_RIG_TIMEOUT:-3600}"
    rig_finished "$log" "${AXVM_RIG_TIMEOUT:-3600}" || return 1
    balloon_run "$log" "aarch64-$cpu"
}

shell_aarch64() {
    echo "kvm-rig: booting to a shell; 'poweroff -f' or Ctrl-A x to leave"
    local -a qemu
    qemu_aarch64 "${1:-max}" rig=shell
    "${qemu[@]}"
}

# --- riscv64 -------------------------------------------------------------------------------
# RISC-V KVM (the H extension): Debian trixie's riscv64 kernel (KVM a module, kvm.ko, which
# rig/init.sh loads) under qemu-system-riscv64 -M virt -cpu rv64 (TCG; rv64 has the H
# extension, OpenSBI is QEMU's default firmware), running the static riscv64 axvm
# (scripts/build-static.sh riscv64, musl) and the C baseline (Benchmarks/uffd-baseline/baseline.c).
# Debian 12 has no riscv64 port, so fetch asks trixie through a sources list of its own
# ($cache_rv/apt; the machine's apt configuration is left alone). Cache: $cache/riscv64, laid
# out as the others.
cache_rv=$cache/riscv64
RV_SUITE=trixie

# rv_apt apt-get|apt-cache ARGS...: apt on the rig's own sources list (Debian $RV_SUITE main,
# riscv64 only), lists and package cache under $cache_rv/apt.
rv_apt() {
    local tool=$1 a=$cache_rv/apt
    shift
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
    [ -f "$a/sources.list" ] || echo "deb [arch=riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $RV_SUITE main" > "$a/sources.list"
    "$tool" -q -o Dir::Etc::sourcelist="$a/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" \
        -o APT::Architecture=riscv64 -o APT::Architectures::=riscv64 "$@"
}

# rv_kernel_package: the linux-image-6.12.* package Debian's linux-image-riscv64 points at,
# else the highest one (after an update of the rig's own lists when they are missing or
# AXVM_RIG_REFRESH=1).
rv_kernel_package() {
    local pkg=""
    if [ "${AXVM_RIG_REFRESH:-0}" = 1 ] || ! ls "$cache_rv/apt/lists/"*riscv64_Packages* >/dev/null 2>&1; then
        local st=0
        rv_apt apt-get update -qq > "$cache_rv/apt/update.log" 2>&1 || st=$?
        grep -v '^W: Download is performed unsandboxed' "$cache_rv/apt/update.log" >&2 || true
        [ $st = 0 ] || die "apt-get update on $cache_rv/apt/sources.list failed"
    fi
    pkg=$(rv_apt apt-cache depends linux-image-riscv64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.12\.[^ :]*-riscv64\)$/\1/p' | head -1)
    [ -n "$pkg" ] || pkg=$(rv_apt apt-cache search --names-only '^linux-image-6\.12\.[0-9.]+\+deb[0-9]+-riscv64$' | cut -d' ' -f1 | sort -V | tail -1)
    [ -n "$pkg" ] || die "no linux-image-6.12.*-riscv64 package in Debian $RV_SUITE"
    echo "$pkg"
}

fetch_riscv64() {
    mkdir -p "$cache_rv/debs"
    if [ -f "$cache_rv/kernel-package" ] && [ -f "$cache_rv/busybox/bin/busybox" ] && [ "${AXVM_RIG_REFRESH:-0}" != 1 ]; then
        local pkg
        pkg=$(cat "$cache_rv/kernel-package")
        if [ -f "$cache_rv/$pkg/vmlinuz" ] && [ -f "$cache_rv/$pkg/modules/kvm.ko" ]; then
            echo "kvm-rig: cached: $pkg, busybox-static:riscv64 ($cache_rv)"
            return
        fi
    fi
    local pkg kdeb bdeb
    pkg=$(rv_kernel_package)
    (
        cd "$cache_rv/debs"
        # apt-get download as root warns that _apt cannot write here; the download works.
        ls "${pkg}"_*_riscv64.deb >/dev/null 2>&1 || rv_apt apt-get download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
        ls busybox-static_*_riscv64.deb >/dev/null 2>&1 || rv_apt apt-get download busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    )
    kdeb=$(ls "$cache_rv/debs/${pkg}"_*_riscv64.deb 2>/dev/null | sort -V | tail -1)
    bdeb=$(ls "$cache_rv/debs"/busybox-static_*_riscv64.deb 2>/dev/null | sort -V | tail -1)
    [ -n "$kdeb" ] || die "apt-get download $pkg (riscv64, Debian $RV_SUITE) failed"
    [ -n "$bdeb" ] || die "apt-get download busybox-static (riscv64, Debian $RV_SUITE) failed"

    # The kernel Image (/boot/vmlinux-*: an Image with a PE header, as QEMU's -kernel takes
    # it), its config and kvm.ko (xz-compressed in the package; kvm.ko depends on no other
    # module).
    local dir=$cache_rv/$pkg tmp=$cache_rv/$pkg.tmp ko
    rm -rf "$tmp" && mkdir -p "$tmp/modules"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" --wildcards './boot/vmlinu[xz]-*' './boot/config-*' '*/arch/riscv/kvm/kvm.ko*'
    cp "$(ls "$tmp"/boot/vmlinu[xz]-* | head -1)" "$tmp/vmlinuz"
    cp "$tmp"/boot/config-* "$tmp/config"
    ko=$(find "$tmp" -path '*/arch/riscv/kvm/kvm.ko*' | head -1)
    [ -n "$ko" ] || die "no kvm.ko in $kdeb"
    case $ko in
        *.xz) xz -dc "$ko" > "$tmp/modules/kvm.ko" ;;
        *.zst) zstd -dqc "$ko" > "$tmp/modules/kvm.ko" ;;
        *) cp "$ko" "$tmp/modules/kvm.ko" ;;
    esac
    local opt
    for opt in CONFIG_KVM=m CONFIG_USERFAULTFD=y CONFIG_HAVE_ARCH_USERFAULTFD_MINOR=y CONFIG_BLK_DEV_INITRD=y CONFIG_RD_GZIP=y; do
        grep -q "^$opt\$" "$tmp/config" || die "$pkg: not $opt"
    done
    rm -rf "$tmp/boot" "$tmp/usr" "$tmp/lib" "$dir"
    mv "$tmp" "$dir"

    rm -rf "$cache_rv/busybox" && mkdir -p "$cache_rv/busybox"
    dpkg-deb -x "$bdeb" "$cache_rv/busybox"
    # trixie's package has it in /usr/bin (merged /usr); the rig takes bin/busybox.
    [ -f "$cache_rv/busybox/bin/busybox" ] || { mkdir -p "$cache_rv/busybox/bin"; cp "$cache_rv/busybox/usr/bin/busybox" "$cache_rv/busybox/bin/busybox"; }
    echo "$pkg" > "$cache_rv/kernel-package"
    echo "kvm-rig: fetched $(basename "$kdeb"), $(basename "$bdeb") into $cache_rv"
}

# is_static_riscv64 FILE: an ELF for RISC-V (e_machine 243), 64-bit, with no program interpreter.
is_static_riscv64() {
    [ "$(head -c 5 "$1" | od -An -c | tr -d ' ')" = '177ELF002' ] || return 1
    [ "$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')" = 243 ] || return 1
    ! "$(dirname "$(command -v swiftc)")/llvm-objdump" -p "$1" | grep -q '^ *INTERP '
}

build_riscv64() {
    local kdir bb swift_bin axvm
    [ -f "$cache_rv/kernel-package" ] || die "nothing fetched for riscv64 yet: run $0 fetch riscv64"
    kdir=$cache_rv/$(cat "$cache_rv/kernel-package")
    bb=$cache_rv/busybox/bin/busybox
    [ -f "$kdir/vmlinuz" ] && [ -f "$kdir/modules/kvm.ko" ] && [ -f "$bb" ] || die "riscv64 kernel, kvm.ko or busybox missing: run $0 fetch riscv64"
    swift_bin=$(dirname "$(command -v swiftc)")
    mkdir -p "$out"

    # axvm: the static musl build (no riscv64 Linux Swift runtime exists here).
    if [ -n "${AXVM_RIG_AXVM:-}" ]; then
        axvm=$AXVM_RIG_AXVM
        echo "kvm-rig: axvm: $axvm (AXVM_RIG_AXVM), not built"
    else
        [ -x scripts/build-static.sh ] || die "scripts/build-static.sh is missing; or name a static riscv64 axvm in AXVM_RIG_AXVM"
        echo "kvm-rig: scripts/build-static.sh riscv64"
        if ! nice scripts/build-static.sh riscv64 > "$out/build-static.log" 2>&1; then
            tail -40 "$out/build-static.log"
            die "scripts/build-static.sh riscv64 failed (log: $out/build-static.log)"
        fi
        axvm=.build-static/riscv64/axvm
    fi
    [ -f "$axvm" ] || die "no axvm at $axvm"
    is_static_riscv64 "$axvm" || die "$axvm is not a static RISC-V 64-bit ELF binary"

    # The guests: guests/riscv64/*.S built by scripts/build-guests.sh into guests/build/riscv64,
    # or the .bin files of the directory AXVM_RIG_GUESTS names (nothing built then).
    local guests=${AXVM_RIG_GUESTS:-guests/build/riscv64}
    if [ -z "${AXVM_RIG_GUESTS:-}" ]; then scripts/build-guests.sh; fi
    if ! ls "$guests"/*.bin >/dev/null 2>&1; then
        echo "kvm-rig: warning: no RISC-V guests in $guests (scripts/build-guests.sh builds guests/riscv64/*.S); their cases will be skipped"
    fi

    rm -rf "$out/root" && mkdir -p "$out/root"/{bin,sbin,proc,sys,dev,tmp,modules,guests,rig}
    local root=$out/root
    cp "$axvm" "$root/axvm"
    "$swift_bin/llvm-objcopy" --strip-all "$root/axvm"
    command -v riscv64-linux-gnu-gcc >/dev/null || die "riscv64-linux-gnu-gcc missing: run scripts/setup.sh"
    nice riscv64-linux-gnu-gcc -O2 -static -pthread -o "$root/baseline" Benchmarks/uffd-baseline/baseline.c \
        || die "the riscv64 C baseline does not build (static riscv64 glibc missing? run scripts/setup.sh)"
    riscv64-linux-gnu-strip "$root/baseline"
    cp "$bb" "$root/bin/busybox"
    cp "$kdir/modules/kvm.ko" "$root/modules/"
    if ls "$guests"/*.bin >/dev/null 2>&1; then cp "$guests"/*.bin "$root/guests/"; fi
    # Linux on axvm: the same kernel as the rig's, with the guest initramfs of the other rigs.
    mkdir -p "$root/linux"
    cp "$kdir/vmlinuz" "$root/linux/vmlinuz"
    BUSYBOX=$bb scripts/linux-guest-initramfs.sh "$root/linux/initramfs.cpio.gz" > /dev/null
    # Debian trixie's riscv64 QEMU for the peer boot (AXVM_RIG_NO_QEMU=1 leaves it out).
    if [ "${AXVM_RIG_NO_QEMU:-0}" != 1 ]; then
        echo "kvm-rig: scripts/qemu-riscv64-sysroot.sh (Debian trixie's riscv64 QEMU for the peer)"
        AXVM_QEMU_CHECK=0 nice scripts/qemu-riscv64-sysroot.sh "$root" > "$out/qemu-sysroot.log" 2>&1 \
            || { tail -20 "$out/qemu-sysroot.log"; die "scripts/qemu-riscv64-sysroot.sh failed (log: $out/qemu-sysroot.log)"; }
    fi
    kut_into_root riscv64 "$root"
    cp rig/init.sh "$root/init"
    chmod +x "$root/init"
    resolve_expectations rig/expected-riscv64.txt > "$root/rig/expected.txt"
    cp rig/expected-riscv64.txt "$root/rig/"
    # The riscv64 busybox does not run here: the archive is written by cpio_newc.
    cpio_newc "$root" | gzip -1 > "$out/initramfs.cpio.gz"
    cp "$kdir/vmlinuz" "$out/vmlinuz"
    cp "$root/rig/expected.txt" "$out/expected.txt"
    echo "kvm-rig: $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1)), kernel $(cat "$cache_rv/kernel-package")," \
        "guests: $(ls "$root/guests" | tr '\n' ' ')"
}

# -smp 2 (AXVM_RIG_SMP): the 2-vCPU cases get a host CPU each. As on arm64, a userfaultfd
# wake-up across emulated CPUs costs far more under TCG, so rig/init.sh pins axvm and the
# baseline to CPU 0 for the single-vCPU cases unless AXVM_RIG_PIN=0. -m 2G: 64 MiB guests and
# the 16 MiB initramfs with room to spare. No AIA (aia=aplic-imsic hangs the boot in QEMU 7.2):
# KVM then has no in-kernel irqchip, which the rig's guests do not need.
qemu_riscv64() {  # sets qemu=(command line); arguments: extra kernel parameters
    command -v qemu-system-riscv64 >/dev/null || die "qemu-system-riscv64 missing: run scripts/setup.sh"
    [ -f "$out/initramfs.cpio.gz" ] || die "no initramfs: run $0 build riscv64"
    qemu=(qemu-system-riscv64 -M virt -accel tcg -cpu rv64 -m 2G -smp "${AXVM_RIG_SMP:-2}"
          -nographic -no-reboot -nic none -kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.gz"
          -append "console=ttyS0 rdinit=/init panic=-1 quiet$([ "${AXVM_RIG_PIN:-1}" = 1 ] || echo ' rig_nopin')${AXVM_RIG_HANG:+ rig_hang=$AXVM_RIG_HANG} $*"
          -monitor "unix:$(monitor_socket),server,nowait")
}

test_riscv64() {
    local log=$out/test.log status=0 limit=${AXVM_RIG_TIMEOUT:-3600}
    local -a qemu
    echo "kvm-rig: riscv64, -cpu rv64 (H extension), -smp ${AXVM_RIG_SMP:-2}"
    qemu_riscv64 rig=test
    rig_boot_retrying "$log" "$limit"
    rig_finished "$log" "$limit" || return 1
    compare_riscv64 "$log" || status=1
    echo "kvm-rig: timings (riscv64): QEMU start to init $rig_boot s (kernel uptime at init" \
        "$(sed -n 's/^rig: init at \([0-9.]*\) s.*/\1/p' "$log") s), suite $(sed -n 's/^rig: suite took \([0-9.]*\) s/\1/p' "$log") s, QEMU total $rig_total s"
    return $status
}

# compare_riscv64 [LOG]: the saved log (default: the last test's) against
# rig/expected-riscv64.txt. A case skipped because its guest is missing fails here unless
# AXVM_RIG_PARTIAL=1 (while guests/riscv64 is being written).
compare_riscv64() {
    local log=${1:-$out/test.log} status=0 skipped
    [ -f "$log" ] || die "no log $log: run $0 test riscv64"
    resolve_expectations rig/expected-riscv64.txt > "$out/expected.txt"
    check_log "$log" "$out/expected.txt" rig/expected-riscv64.txt riscv64 || status=1
    skipped=$(grep -c '^[a-z0-9-]*: skipped (guest .* absent)' "$log" || true)
    if [ "$skipped" -gt 0 ]; then
        echo "kvm-rig: riscv64: $skipped case(s) skipped for a missing guest:"
        grep '^[a-z0-9-]*: skipped (guest .* absent)' "$log" | sed 's/^/  /'
        [ "${AXVM_RIG_PARTIAL:-0}" = 1 ] || status=1
    fi
    return $status
}

shell_riscv64() {
    echo "kvm-rig: booting to a shell; 'poweroff -f' or Ctrl-A x to leave"
    local -a qemu
    qemu_riscv64 rig=shell
    "${qemu[@]}"
}

# linux_riscv64 [ROUNDS]: only the riscv64 Linux cases, then ROUNDS (3) interleaved rounds of
# axvm lazy 4K / lazy 64K / populated and QEMU's own virt machine with KVM (the peer, Debian
# trixie's QEMU in the rig: scripts/qemu-riscv64-sysroot.sh) booting the same kernel,
# initramfs, command line and RAM (rig/init.sh linux_peer); the table is printed at the end.
# Not compared with the expectations (the test does that).
linux_riscv64() {
    local rounds=${1:-3} log=$out/linux.log
    local -a qemu
    qemu_riscv64 rig=linux rig_rounds=$rounds
    echo "kvm-rig: riscv64, booting for the Linux cases and $rounds comparison round(s)"
    rig_table "$log" "Linux boot, " "${AXVM_RIG_TIMEOUT:-$((1800 + rounds * 600))}"
}

verb=${1:-}
arch=${2:-x86_64}
case "$verb" in
    fetch)
        case "$arch" in
            x86_64) fetch ;;
            aarch64) fetch_aarch64 ;;
            riscv64) fetch_riscv64 ;;
            *) die "fetch: x86_64, aarch64 or riscv64" ;;
        esac ;;
    build|test|shell|compare|linux|soak|disk|balloon|sandbox|kut)
        case "$verb/$arch" in
            */x86_64|build/aarch64|test/aarch64|shell/aarch64|compare/aarch64|linux/aarch64|disk/aarch64|balloon/aarch64|sandbox/aarch64|kut/aarch64) ;;
            build/riscv64|test/riscv64|shell/riscv64|compare/riscv64|linux/riscv64|kut/riscv64) ;;
            *) die "$verb $arch: not wired up (aarch64: fetch, build, test, shell, compare, linux, disk, balloon, sandbox, kut; riscv64: fetch, build, test, shell, compare, linux, kut)" ;;
        esac
        out=$repo/.build-rig/rig-$arch
        shift $(($# < 2 ? $# : 2))
        "${verb}_$arch" "$@" ;;
    *) echo "usage: $0 fetch [x86_64|aarch64] | build x86_64|aarch64 | test x86_64 | test aarch64 [max|cortex-a57|both]" >&2
       echo "       | shell x86_64 | shell aarch64 [max|cortex-a57] | compare x86_64 [LOG] | compare aarch64 [CPU|both] | linux x86_64 [ROUNDS]" >&2
       echo "       | linux aarch64 [max|cortex-a57] [ROUNDS]" >&2
       echo "       | soak x86_64 [N] [AXVM BOOT ARGS] | disk x86_64 [ROUNDS] | disk aarch64 [max|cortex-a57] [ROUNDS]" >&2
       echo "       | balloon x86_64 | balloon aarch64 [max|cortex-a57] | sandbox x86_64 [ROUNDS] | sandbox aarch64 [max|cortex-a57] [ROUNDS]" >&2
       echo "       | kut x86_64 [NAME...] | kut aarch64 [max|cortex-a57] [NAME...]" >&2
       echo "       | fetch riscv64 | build riscv64 | test riscv64 | shell riscv64 | compare riscv64 [LOG] | linux riscv64 [ROUNDS]" >&2
       echo "       | kut riscv64 [NAME...]" >&2
       exit 2 ;;
esac
