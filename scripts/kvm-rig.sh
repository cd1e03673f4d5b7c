#!/usr/bin/env bash
# Real KVM beyond this machine's kvm_pvm: a Debian kernel booted under QEMU's pure emulator
# (TCG) with an AMD CPU model that has SVM and nested paging, so kvm_amd loads with NPT and
# axvm runs on it from an initramfs. Recipe: ../shared/reference/kvm-rigs.md.
#   scripts/kvm-rig.sh fetch            Debian kernel + busybox-static .debs, cached and unpacked
#   scripts/kvm-rig.sh build x86_64     axvm (static Swift stdlib), guests, C baseline, initramfs
#   scripts/kvm-rig.sh test x86_64      boot, run rig/init.sh's suite, compare with rig/expected-x86_64.txt
#   scripts/kvm-rig.sh shell x86_64     boot to a busybox prompt (Ctrl-A x leaves QEMU)
#   scripts/kvm-rig.sh compare x86_64 [LOG]  check a saved log (default: the last test's) again
#   scripts/kvm-rig.sh linux x86_64 [ROUNDS]  Linux on axvm vs QEMU microvm only, ROUNDS (3) rounds
# Cache: $AXVM_RIG_CACHE (default ~/.cache/axvm-rig), outside git; AXVM_RIG_REFRESH=1 makes
# fetch look up the current kernel again. Build output: .build-rig/rig-x86_64/.
# AXVM_RIG_TIMEOUT (seconds, default 600; a normal run takes 2-3 minutes) bounds the boot of `test`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}
out=$repo/.build-rig/rig-x86_64

die() { echo "kvm-rig: $*" >&2; exit 1; }

# --- fetch ---------------------------------------------------------------------------------

# The unsigned twin of the kernel Debian's linux-image-amd64 points at (its modules are
# the same; the unsigned package has no shim dependency), else the highest 6.1.0-N.
kernel_package() {
    local abi
    abi=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -1)
    if [ -n "$abi" ] && apt-cache show "linux-image-$abi-unsigned" >/dev/null 2>&1; then
        echo "linux-image-$abi-unsigned"
        return
    fi
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | cut -d' ' -f1 | sort -V | tail -1
}

fetch() {
    mkdir -p "$cache/debs"
    if [ -f "$cache/kernel-package" ] && [ -f "$cache/busybox/bin/busybox" ] && [ "${AXVM_RIG_REFRESH:-0}" != 1 ]; then
        local pkg
        pkg=$(cat "$cache/kernel-package")
        if [ -f "$cache/$pkg/vmlinuz" ]; then
            echo "kvm-rig: cached: $pkg, busybox-static ($cache)"
            return
        fi
    fi
    local pkg
    pkg=$(kernel_package)
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(kernel_package)
    fi
    [ -n "$pkg" ] || die "no linux-image-6.1.0-*-amd64-unsigned package known to apt"
    (
        cd "$cache/debs"
        # apt-get download as root warns that _apt cannot write here; the download works.
        ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
        ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -q busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    )
    local kdeb bdeb
    kdeb=$(ls "$cache/debs/${pkg}"_*.deb 2>/dev/null | sort -V | tail -1)
    bdeb=$(ls "$cache/debs"/busybox-static_*.deb 2>/dev/null | sort -V | tail -1)
    [ -n "$kdeb" ] || die "apt-get download $pkg failed"
    [ -n "$bdeb" ] || die "apt-get download busybox-static failed"

    # Unpack the kernel image and the four KVM modules only (the .deb holds ~400 MB of modules).
    local dir=$cache/$pkg tmp=$cache/$pkg.tmp
    rm -rf "$tmp" && mkdir -p "$tmp"
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
        '*/virt/lib/irqbypass.ko' '*/arch/x86/kvm/kvm.ko' '*/drivers/crypto/ccp/ccp.ko' '*/arch/x86/kvm/kvm-amd.ko'
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
    BUSYBOX=$bb scripts/linux-guest-initramfs.sh "$root/linux/initramfs.cpio.gz" > /dev/null
    [ "${AXVM_RIG_NO_QEMU:-0}" = 1 ] || copy_qemu "$root"
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
          -append "console=ttyS0 rdinit=/init panic=-1 quiet $*")
}

test_x86_64() {
    local log=$out/test.log start end status=0 limit=${AXVM_RIG_TIMEOUT:-600}
    local -a qemu
    qemu_x86_64 rig=test
    rm -f "$out/init-time"
    start=$(date +%s.%N)
    echo "kvm-rig: booting (timeout $limit s), log in $log"
    set +e
    # The firmware and kernel's terminal escapes and CRs go, so lines compare as text.
    timeout "$limit" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r//g' \
        | while IFS= read -r line; do   # note when init starts, for the boot time
            case $line in *"rig: init at "*) date +%s.%N > "$out/init-time" ;; esac
            printf '%s\n' "$line"
        done | tee "$log"
    local qstatus=${PIPESTATUS[0]}
    set -e
    end=$(date +%s.%N)
    local total boot
    total=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    boot=$( [ -f "$out/init-time" ] && awk -v a="$start" -v b="$(cat "$out/init-time")" 'BEGIN { printf "%.1f", b - a }' || echo "?")
    echo "kvm-rig: QEMU ran $total s"
    if [ "$qstatus" = 124 ]; then
        echo "kvm-rig: FAIL: timed out after $limit s (boot or a case hung)"
        return 1
    fi
    grep -qx 'RIG DONE' "$log" || { echo "kvm-rig: FAIL: the suite did not finish (QEMU status $qstatus)"; return 1; }
    compare_x86_64 "$log" || status=1
    echo "kvm-rig: timings: QEMU start to init $boot s (kernel uptime at init" \
        "$(sed -n 's/^rig: init at \([0-9.]*\) s.*/\1/p' "$log") s), suite $(sed -n 's/^rig: suite took \([0-9.]*\) s/\1/p' "$log") s, QEMU total $total s"
    return $status
}

# compare_x86_64 [LOG [EXPECTED]]: the rig's output (default: the last test's) against the
# expectations (default: rig/expected-x86_64.txt; the linux verb: rig/expected-linux-x86_64.txt).
compare_x86_64() {
    local log=${1:-$out/test.log} expected=${2:-rig/expected-x86_64.txt} missing=0 name status=0
    [ -f "$log" ] || die "no log $log: run $0 test x86_64"
    # The build's copy has the checksums resolved; resolve again if the template changed.
    resolve_expectations "$expected" > "$out/expected.txt"
    # Every expected line must appear as a whole line, except those of a case the rig skipped.
    while IFS= read -r line; do
        grep -qxF -- "$line" "$log" && continue
        name=${line%%:*}
        if grep -qx -- "$name: skipped.*" "$log"; then continue; fi
        [ $missing = 0 ] && echo "kvm-rig: expected lines missing from the rig's output:"
        echo "  - $line"
        missing=$((missing + 1))
    done < "$out/expected.txt"
    [ $missing = 0 ] || status=1
    if grep -q '^| .* | FAIL |' "$log"; then
        echo "kvm-rig: failed cases (their lines are not in rig/expected-x86_64.txt):"
        grep '^| .* | FAIL |' "$log"
        status=1
    fi
    if [ $status = 0 ]; then
        echo "kvm-rig: x86_64: every expected line present ($(wc -l < "$out/expected.txt") lines)"
    fi
    return $status
}

# linux_x86_64 [ROUNDS]: only the Linux cases and ROUNDS (default 3) interleaved boots of
# axvm lazy, axvm populated and QEMU microvm, for the comparison in the README.
linux_x86_64() {
    local log=$out/linux.log limit=${AXVM_RIG_TIMEOUT:-900} rounds=${1:-3}
    local -a qemu
    qemu_x86_64 rig=linux rig_rounds=$rounds
    echo "kvm-rig: booting for the Linux cases and $rounds comparison rounds (timeout $limit s), log in $log"
    set +e
    timeout "$limit" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r//g' | tee "$log"
    local qstatus=${PIPESTATUS[0]}
    set -e
    [ "$qstatus" = 124 ] && { echo "kvm-rig: FAIL: timed out after $limit s"; return 1; }
    grep -qx 'RIG DONE' "$log" || { echo "kvm-rig: FAIL: did not finish (QEMU status $qstatus)"; return 1; }
    compare_x86_64 "$log" rig/expected-linux-x86_64.txt
}

shell_x86_64() {
    echo "kvm-rig: booting to a shell; 'poweroff -f' or Ctrl-A x to leave"
    local -a qemu
    qemu_x86_64 rig=shell
    "${qemu[@]}"
}

verb=${1:-}
arch=${2:-x86_64}
case "$verb" in
    fetch) fetch ;;
    build|test|shell|compare|linux)
        [ "$arch" = x86_64 ] || die "only x86_64 is wired up (arm64: see kvm-rigs.md)"
        shift $(($# < 2 ? $# : 2))
        "${verb}_$arch" "$@" ;;
    *) echo "usage: $0 fetch | build x86_64 | test x86_64 | shell x86_64 | compare x86_64 [LOG] | linux x86_64 [ROUNDS]" >&2; exit 2 ;;
esac
