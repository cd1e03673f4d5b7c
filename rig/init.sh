#!/bin/busybox sh
# PID 1 of the KVM rig's initramfs (scripts/kvm-rig.sh): loads kvm_amd (x86_64; on aarch64
# KVM is built into the kernel; riscv64 loads kvm.ko, in its own section below), then either runs the suite (kernel parameter rig=test),
# prints a results table and a first-touch measurement and powers off, or gives a shell
# (rig=shell). `/init suite` runs the suite from that shell.
# Every case prints one line that scripts/kvm-rig.sh looks for in rig/expected-x86_64.txt or
# rig/expected-aarch64.txt (here /rig/expected.txt, checksums resolved; on aarch64 the lines
# for the CPU model in rig_cpu=, see expected_for_cpu in kvm-rig.sh); a case passes when its
# line is there.
# Before each case it prints "rig-case: NAME timeout=SECONDS" (rig_case): scripts/kvm-rig.sh
# takes a console silent for longer than that plus a margin as a hang and then asks, on the
# second serial port (x86_64: ttyS1, answer_requests), what axvm's threads are doing.
ARCH=$(/bin/busybox uname -m)
EXPECTED=/rig/expected.txt
MEM=64M                  # memtest RAM; the test region is everything above 2 MiB
MEM_MIB=64
PIN=                     # aarch64 with more than one CPU: "taskset 1" (see setup)
ROUNDS=5                 # first-touch measurement: median of this many interleaved rounds
CAP=16M                  # --max-resident for the case that must hit it
CAP_BYTES=16777216

HANG=                    # a case that hangs on purpose (rig_hang=, AXVM_RIG_HANG in kvm-rig.sh)

up() { read -r u _ < /proc/uptime; echo "$u"; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }'; }

setup() {
    /bin/busybox mkdir -p /usr/bin /usr/sbin
    /bin/busybox --install -s
    export PATH=/bin:/sbin:/usr/bin:/usr/sbin
    mount -t proc proc /proc
    mount -t sysfs sys /sys
    mount -t devtmpfs dev /dev
    mount -t tmpfs tmp /tmp
    dmesg -n 1                        # keep kernel messages off the console
    HANG=$(sed -n 's/.*rig_hang=\([^ ]*\).*/\1/p' /proc/cmdline)
    echo; echo "rig: init at $(up) s after boot, kernel $(uname -r)"
    if [ -c /dev/ttyS1 ] && [ "$ARCH" = x86_64 ]; then
        answer_requests /dev/ttyS1 &
    fi
    if [ "$ARCH" = aarch64 ]; then
        setup_aarch64
        return
    fi
    if [ "$ARCH" = riscv64 ]; then   # riscv64: its own section (setup_riscv64)
        setup_riscv64
        return
    fi
    local t0 m
    t0=$(up)
    for m in irqbypass kvm ccp kvm-amd; do
        insmod /modules/$m.ko || echo "rig: insmod $m.ko failed"
    done
    echo "rig: kvm modules loaded in $(since "$t0") s"
    dmesg | grep -i -e 'kvm' -e 'svm' -e 'nested paging' | sed 's/^/[dmesg] /'
    # One empty VM for the whole rig. KVM 6.1 turns SVM on at the first VM and off after the
    # last, so without it every case toggles SVM; the emulator stalls seen (kvm-rig.sh,
    # rig_watch) came where one run had ended and the next begun.
    if [ -x /baseline ]; then
        /baseline hold-vm &
        echo "rig: one empty VM held for the whole rig (SVM stays on between cases)"
    fi
}

# arm64: KVM is built in and initialized at boot (VHE or nVHE by the CPU model). The
# expectations are narrowed to this CPU model's lines ("{max} ..." / "{cortex-a57} ...").
# Under TCG a userfaultfd wake-up of a thread on another emulated CPU costs ~10x a wake-up on
# the same one (kvm-rigs.md): with more than one CPU, axvm and the baseline run pinned to CPU 0
# (all their threads: vCPUs and fault threads).
setup_aarch64() {
    CPU=$(sed -n 's/.*rig_cpu=\([^ ]*\).*/\1/p' /proc/cmdline)
    echo "rig: arm64, -cpu ${CPU:-?}, $(grep -c ^processor /proc/cpuinfo) CPU(s), KVM built in"
    dmesg | grep -i -e 'kvm' -e 'hyp' -e 'el2' | sed 's/^/[dmesg] /'
    sed -n "/^{/!p; s/^{$CPU} //p" /rig/expected.txt > /tmp/expected.txt
    EXPECTED=/tmp/expected.txt
    if [ "$(grep -c ^processor /proc/cpuinfo)" -gt 1 ] && ! grep -qw rig_nopin /proc/cmdline; then
        PIN="taskset 1"
        echo "rig: axvm and the baseline run pinned to CPU 0 ($PIN)"
    fi
}

# rig_case NAME SECONDS: announces a case and how long it may run, for scripts/kvm-rig.sh's
# progress watch (a console silent for longer than SECONDS plus its margin is a hang).
rig_case() { echo "rig-case: $1 timeout=$2"; }

# case_timeout CMD...: the --timeout of an axvm command line (axvm's default, 30, if none), or
# N of a "timeout -s KILL N ..." one.
case_timeout() {
    local t=30
    [ "$1" = timeout ] && [ "$2" = -s ] && t=$4
    while [ $# -gt 1 ]; do
        [ "$1" = --timeout ] && t=$2
        shift
    done
    echo "$t"
}

# thread_dump: what the cases' processes (axvm, the C baseline, QEMU) are doing: every
# thread's name, state, CPU ticks, wait channel and kernel stack; "rig-dump: " lines.
thread_dump() {
    local p t c s
    echo "rig-dump: uptime $(up) s, load $(cat /proc/loadavg)"
    for p in /proc/[0-9]*; do
        c=$(cat $p/comm 2>/dev/null) || continue
        case $c in axvm|baseline|qemu-system-*) ;; *) continue ;; esac
        echo "rig-dump: pid ${p#/proc/}: $(tr '\0' ' ' < $p/cmdline | cut -c1-160)"
        for t in $p/task/*; do
            s=$(sed 's/^.*) //' $t/stat 2>/dev/null | awk '{ printf "state %s, utime %s, stime %s", $1, $12, $13 }')
            echo "rig-dump:   thread ${t##*/} $(cat $t/comm 2>/dev/null): $s, wchan $(cat $t/wchan 2>/dev/null)"
            sed 's/^/rig-dump:     /' $t/stack 2>/dev/null
        done
    done
    echo "rig-dump: end"
}

# answer_requests DEV: runs beside the suite; every line scripts/kvm-rig.sh writes to DEV (the
# rig's second serial port, its control socket) gets thread_dump's answer on DEV.
answer_requests() {
    stty -F "$1" raw -echo 2>/dev/null
    exec 3<> "$1"
    while read -r _ <&3; do thread_dump >&3; done
}

# Field of the last run's --stats-json (numbers bare, strings without quotes).
jf() { [ -f /tmp/s.json ] && sed -n "s/^  \"$1\": \(.*\)\$/\1/p" /tmp/s.json | sed 's/,$//; s/^"//; s/"$//'; }

# axrun NAME ARGS...: runs axvm, prints its output as "[NAME] line"; sets st and dt.
axrun() {
    name=$1; shift
    rm -f /tmp/s.json
    local t0
    rig_case "$name" "$(case_timeout "$@")"
    t0=$(up)
    if [ "$name" = "$HANG" ]; then
        # AXVM_RIG_HANG=NAME: this case hangs silently (axvm stopped), to try the progress watch.
        $PIN /axvm "$@" > /tmp/out 2>&1 &
        usleep 300000; kill -STOP $!; wait $!
    fi
    $PIN /axvm "$@" > /tmp/out 2>&1; st=$?
    dt=$(since "$t0")
    sed "s/^/[$name] /" /tmp/out
    # A console cut short (a snapshot taken at a line's text, before its newline) ends here.
    [ -z "$(tail -c 1 /tmp/out)" ] || echo
}

# The exit description without register values (they differ by build and by CPU); on
# aarch64 axvm names pc instead of rip (" (pc 0x...)", " at pc 0x..."; the stats file's
# abort text said "at rip 0x..." when this was written, so that goes too).
exit_msg() {
    if [ "$ARCH" = aarch64 ]; then
        jf exit | sed 's/ (\(pc\|rip\) 0x[0-9a-f]*)//; s/ at \(pc\|rip\) 0x[0-9a-f]*//'
    else
        jf exit | sed 's/ (rip 0x[0-9a-f]*)//; s/ at rip 0x[0-9a-f]*, rsp .*$//'
    fi
}
host_check() { [ "$(jf residency_mismatches)" = 0 ] && echo ok || echo "$(jf residency_mismatches) pages disagree"; }
memtest_line() {
    if [ ! -f /tmp/s.json ]; then echo "$name: exit $st, no statistics"; return; fi
    printf '%s: exit %s, checksum 0x%016x, mismatches %s, faults in test region %s, host check %s\n' \
        "$name" "$st" "$(jf checksum)" "$(jf mismatches)" "$(jf faults_in_test_region)" "$(host_check)"
}

# unprintable_json: the case's statistics JSON holds what Embedded Swift prints for a value it
# cannot print (the arm64 and riscv64 builds): said, and the case fails.
unprintable_json() {
    [ -f /tmp/s.json ] && grep -q 'cannot print value' /tmp/s.json || return 1
    echo "[$name] the statistics JSON holds a value Embedded Swift could not print: $(grep -m1 'cannot print value' /tmp/s.json)"
}

# result LINE: prints the case's line and records its row in the results table.
npass=0; nfail=0
result() {
    echo "$1"
    local r=FAIL
    if grep -qxF -- "$1" $EXPECTED && ! unprintable_json; then r=pass; npass=$((npass + 1)); else nfail=$((nfail + 1)); fi
    local f=- m=- p50=- p99=-
    if [ -f /tmp/s.json ]; then
        f=$(jf faults)
        m=$(jf minor_faults)
        p50=$(awk -v n="$(jf fault_p50_ns)" 'BEGIN { printf "%.1f", n / 1000 }')
        p99=$(awk -v n="$(jf fault_p99_ns)" 'BEGIN { printf "%.1f", n / 1000 }')
    fi
    printf '| %-26s | %-4s | %4s | %6s | %5s | %9s | %9s | %6s |\n' "$name" "$r" "$st" "$f" "$m" "$p50" "$p99" "$dt" >> /tmp/table
}

# measure LABEL: keeps ns/page, faults, p50, p99 of the last axvm memtest run.
measure() {
    [ -f /tmp/s.json ] || return
    awk -v l="$1" -v r="$(jf run_seconds)" -v p="$(jf pages_touched)" -v f="$(jf faults_in_test_region)" \
        -v a="$(jf fault_p50_ns)" -v b="$(jf fault_p99_ns)" \
        'BEGIN { printf "%s|%.0f|%s|%.1f|%.1f\n", l, r * 1e9 / p, f, a / 1000, b / 1000 }' >> /tmp/measure
}

# measure_baseline lazy|populated OUTPUT: keeps ns/page and faults of a baseline run (it
# counts every missing page, the guest's stack page too, and times no single fault).
measure_baseline() {
    local pages faults ns
    pages=$(echo "$2" | sed -n 's/.*pages=\([0-9]*\).*/\1/p')
    faults=$(echo "$2" | sed -n 's/.*faults=\([0-9]*\).*/\1/p')
    ns=$(echo "$2" | sed -n 's/.*run_ns=\([0-9]*\).*/\1/p')
    awk -v l="C baseline, $1" -v r="$ns" -v p="$pages" -v f="$faults" \
        'BEGIN { printf "%s|%.0f|%s|n/a|n/a\n", l, r / p, f }' >> /tmp/measure
}

# baseline NAME lazy|populated: the C userfaultfd VMM on the same guest, size and order.
baseline() {
    name=$1
    local t0 o
    rig_case "$name" 300
    t0=$(up)
    o=$($PIN /baseline /guests/memtest.bin $MEM_MIB "$2" 1 1 2>&1); st=$?
    dt=$(since "$t0")
    rm -f /tmp/s.json
    echo "[$name] $o"
    local cs
    cs=$(echo "$o" | sed -n 's/.*checksum=\([0-9a-f]*\).*/\1/p')
    if [ -n "$cs" ]; then
        result "$(printf '%s: exit %s, checksum 0x%016x' "$name" "$st" "0x$cs")"
        measure_baseline "$2" "$o"
    else
        result "$name: exit $st, no output"
    fi
}

# One more round of the measured configurations, in the suite's order; no checks.
measure_round() {
    local o fa
    rig_case measure-baseline-lazy 300
    o=$($PIN /baseline /guests/memtest.bin $MEM_MIB lazy 1 1) && measure_baseline lazy "$o"
    for fa in 4K 64K 2M; do
        rm -f /tmp/s.json
        rig_case measure-lazy-$fa 300
        $PIN /axvm run /guests/memtest.bin --memory $MEM --order random --fault-around $fa --timeout 300 \
            --stats-json /tmp/s.json > /dev/null 2>&1 && measure "axvm lazy, $fa fault-around"
    done
    rig_case measure-baseline-populated 300
    o=$($PIN /baseline /guests/memtest.bin $MEM_MIB populated 1 1) && measure_baseline populated "$o"
    rm -f /tmp/s.json
    rig_case measure-populated 300
    $PIN /axvm run /guests/memtest.bin --memory $MEM --order random --populate --timeout 300 \
        --stats-json /tmp/s.json > /dev/null 2>&1 && measure "axvm populated"
}

# --- Linux on axvm (axvm boot) and QEMU microvm, same kernel, initramfs and command line ----
LINUX_MEM=512M
LINUX_MEM_BYTES=536870912
# axvm boot's default command line on each architecture (LinuxBootConfig.defaultCmdline).
# arm64: nokaslr so that lazy and populated boots lay memory out the same (the kernel's
# random placement costs a page or two of MemTotal differently each boot).
if [ "$ARCH" = aarch64 ] || [ "$ARCH" = riscv64 ]; then
    LINUX_CMDLINE="console=ttyS0 panic=-1 quiet nokaslr"
else
    LINUX_CMDLINE="console=ttyS0 reboot=k panic=-1 pci=conf1,noearly i8042.noaux i8042.nokbd quiet"
fi
LINUX_MARKER="axvm-linux: init reached"
# A boot takes 20-40 s here; 150 s leaves room for a slow host and still ends a hung boot with
# axvm's own timeout report (vCPU and UART state) well inside the rig's 600 s.
LINUX_ARGS="--kernel /linux/vmlinuz --initrd /linux/initramfs.cpio.gz --memory $LINUX_MEM --timeout 150"

# bootwatch NAME CMD...: runs CMD in the background (output in /tmp/NAME.out) and notes, when
# the init marker first appears, the seconds since start (boot) and the process's VmRSS and
# RssAnon in kB (rss, anon); st and dt: exit status and total seconds. With LIVE=1 the output
# is also shown as it comes, as "[NAME] line" (CRs dropped), so a boot that hangs until the
# rig's own timeout still shows how far it got.
bootwatch() {
    local n=$1 t0 pid tailpid=
    shift
    rig_case "$n" "$(case_timeout "$@")"
    boot=-; rss=-; anon=-; last_out=/tmp/$n.out
    rm -f /tmp/s.json
    : > /tmp/$n.out
    if [ "${LIVE:-0}" = 1 ]; then
        sh -c 'echo $$ > /tmp/tail.pid; exec tail -f "$1"' tail /tmp/$n.out | tr -d '\r' | sed "s/^/[$n] /" &
        tailpid=$!
    fi
    t0=$(up)
    "$@" > /tmp/$n.out 2>&1 < /dev/null &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        if [ "$boot" = - ] && grep -q "$LINUX_MARKER" /tmp/$n.out; then
            boot=$(since "$t0")
            rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status 2>/dev/null)
            anon=$(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status 2>/dev/null)
        fi
        usleep 50000
    done
    wait $pid; st=$?
    dt=$(since "$t0")
    if [ -n "$tailpid" ]; then
        usleep 1200000  # busybox tail -f looks at the file once a second: let it print the last lines
        kill "$(cat /tmp/tail.pid)" 2>/dev/null
        wait $tailpid 2>/dev/null
    fi
    if [ "$boot" = - ] && grep -q "$LINUX_MARKER" /tmp/$n.out; then boot="$dt (exit)"; fi
}

# linux_axvm NAME ARGS...: axvm boot, console shown as "[NAME] line" (CRs dropped).
linux_axvm() {
    name=$1; shift
    LIVE=1 bootwatch $name /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json "$@"
    [ -f /tmp/s.json ] && echo "rig: $name: set-up $(jf setup_seconds) s (kernel and initrd loaded), run $(jf run_seconds) s, $(jf exits) exits, $(jf faults) faults"
    cp /tmp/s.json /tmp/$name.json 2>/dev/null || rm -f /tmp/$name.json
}

linux_line() {
    if [ ! -f /tmp/s.json ]; then echo "$name: exit $st, no statistics"; return; fi
    local m="init marker seen"
    [ "$(jf init_marker_seconds)" = null ] && m="init marker not seen"
    # A halt names the rip, which varies from boot to boot.
    echo "$name: exit $st, $(jf exit | sed 's/ (hlt at rip 0x[0-9a-f]*)//'), $m, host check $(host_check)"
}

# awk functions for the tables: sort(list, v) sorts a space-separated list of numbers into v
# and returns the count; median(list) is its median ("-" for an empty list).
AWK_MEDIAN='
        function sort(list, v,   n, i, j, t) {
            n = split(list, v, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return n
        }
        function median(list,   v, n) { n = sort(list, v); return n ? v[int((n + 1) / 2)] : "-" }
'
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# memtotal_case LAZY POPULATED: the MemTotal (kB) a lazy and a populated boot printed agree.
memtotal_case() {
    name=linux-memtotal
    if [ -n "$1" ] && [ "$1" != null ] && [ "$1" = "$2" ]; then
        result "linux-memtotal: lazy and populated see the same MemTotal"
    else
        result "linux-memtotal: lazy sees ${1:-?} kB, populated ${2:-?} kB"
    fi
}

# lazy_touched_case BYTES: a lazy boot populated less than a third of RAM.
lazy_touched_case() {
    name=linux-lazy-touched
    if [ -n "$1" ] && [ "$1" -gt 0 ] && [ $(($1 * 3)) -lt $LINUX_MEM_BYTES ]; then
        result "linux-lazy-touched: populated below a third of RAM"
    else
        result "linux-lazy-touched: populated ${1:-?} bytes of $LINUX_MEM_BYTES"
    fi
}

# fault_map_case FILE: the --fault-map picture of the boot just ended agrees with its
# statistics (faults, populated bytes). Its text goes to the console between rig-file lines;
# scripts/kvm-rig.sh saves it as .build-rig/rig-x86_64/files/NAME.
fault_map_case() {
    local f=$1 faults bytes
    name=linux-fault-map
    faults=$(sed -n 's/.* data-faults="\([0-9]*\)".*/\1/p' "$f" 2>/dev/null | head -1)
    bytes=$(sed -n 's/.* data-populated-bytes="\([0-9]*\)".*/\1/p' "$f" 2>/dev/null | head -1)
    if [ -n "$faults" ] && [ "$faults" = "$(jf faults)" ] && [ "$bytes" = "$(jf populated_bytes)" ]; then
        result "linux-fault-map: its faults and populated bytes are the statistics'"
    else
        result "linux-fault-map: the map says ${faults:-?} faults and ${bytes:-?} bytes, the statistics $(jf faults) and $(jf populated_bytes)"
    fi
    [ -f "$f" ] || return
    echo "rig-file-begin ${f##*/}"
    cat "$f"
    echo "rig-file-end"
}

linux_cases() {
    echo "rig: Linux on axvm: $(ls -l /linux/vmlinuz | awk '{print $5}')-byte kernel, $LINUX_MEM, cmdline \"$LINUX_CMDLINE\""
    linux_axvm linux-lazy --fault-around 4K
    result "$(linux_line)"
    local lazy_pop lazy_mt lazy_boot=$boot
    lazy_pop=$(jf populated_bytes); lazy_mt=$(jf mem_total_kib)
    linux_axvm linux-populated-poweroff --populate --cmdline "$LINUX_CMDLINE axvm.end=poweroff"
    result "$(linux_line)"
    local pop_mt
    pop_mt=$(jf mem_total_kib)
    memtotal_case "$lazy_mt" "$pop_mt"
    lazy_touched_case "$lazy_pop"
    local pop_boot=$boot
    linux_axvm linux-lazy-64K-2vcpus --fault-around 64K --vcpus 2 --fault-map /tmp/linux-faults.svg
    result "$(linux_line)"
    name=linux-2vcpus-seen
    result "linux-2vcpus-seen: $(tr -d '\r' < /tmp/linux-lazy-64K-2vcpus.out | grep -c -e '^axvm-linux: 2 CPUs online' -e '^axvm-linux: ran on CPU [01]$') of 3 lines"
    fault_map_case /tmp/linux-faults.svg
    local boot64=$boot
    # `halt`: every CPU stops with interrupts off; axvm ends the run at once (status 4).
    linux_axvm linux-halt-4vcpus --fault-around 64K --vcpus 4 --cmdline "$LINUX_CMDLINE axvm.end=halt"
    result "$(linux_line)"
    name=linux-4vcpus-seen
    result "linux-4vcpus-seen: $(tr -d '\r' < /tmp/linux-halt-4vcpus.out | grep -c -e '^axvm-linux: 4 CPUs online' -e '^axvm-linux: ran on CPU [0-3]$') of 5 lines"
    clean_log_case /tmp/linux-lazy.out /tmp/linux-populated-poweroff.out /tmp/linux-lazy-64K-2vcpus.out /tmp/linux-halt-4vcpus.out
    linux_virtio_case
    linux_balloon_case
    linux_root_case
    linux_snapshot_cases
    linux_disk_snapshot_case
    echo "rig: Linux booted with $LINUX_MEM of lazy RAM and touched $(mib "${lazy_pop:-0}") MiB; MemTotal $lazy_mt kB (populated run: $pop_mt kB); boot to init $lazy_boot s lazy 4K, $boot64 s lazy 64K on 2 vCPUs, $boot s on 4 vCPUs, $pop_boot s populated"
}

# linux_virtio_case: Linux with two virtio-blk disks (the second read-only) and a virtio-rng
# on virtio-mmio, found through the ACPI tables (LNRO0005) by Debian's virtio_mmio module;
# the guest writes 1 MiB of random data to /dev/vda and reads it back past its page cache,
# its write to /dev/vdb is refused, it reads /dev/hwrng; from here the image is checked to
# hold what the guest wrote (the checksum it printed).
linux_virtio_case() {
    local w r host
    /bin/busybox dd if=/dev/zero of=/tmp/vda.img bs=1M count=8 2>/dev/null
    printf 'axvm-read-only-disk' > /tmp/vdb.img
    /bin/busybox dd if=/dev/zero of=/tmp/vdb.img bs=1 count=0 seek=1048576 2>/dev/null
    linux_axvm linux-virtio --disk /tmp/vda.img --disk /tmp/vdb.img,ro --rng --cmdline "$LINUX_CMDLINE axvm.virtio"
    result "$(linux_line)"
    w=$(tr -d '\r' < /tmp/linux-virtio.out | sed -n 's/^axvm-virtio: vda wrote \([0-9a-f]*\) read .*/\1/p')
    r=$(tr -d '\r' < /tmp/linux-virtio.out | sed -n 's/^axvm-virtio: vda wrote [0-9a-f]* read \([0-9a-f]*\)$/\1/p')
    host=$(/bin/busybox dd if=/tmp/vda.img bs=64k count=16 2>/dev/null | /bin/busybox md5sum | cut -c1-32)
    name=linux-virtio-disk
    if [ -n "$w" ] && [ "$w" = "$r" ] && [ "$w" = "$host" ]; then
        result "linux-virtio-disk: the guest read back what it wrote, and the image file holds it"
    else
        result "linux-virtio-disk: wrote ${w:-?}, read back ${r:-?}, the image holds $host"
    fi
    rm -f /tmp/vda.img /tmp/vdb.img
}

# memwatch NAME CMD...: runs CMD as bootwatch does (console in /tmp/NAME.out, status in st),
# and every 100 ms appends the process's memory to /tmp/NAME.mem ("seconds RssShmem RssAnon",
# kB; through `timeout` to its child, QEMU), with "# seconds LINE" when a guest line starting
# "axvm-balloon: " first appears (also shown on the console as "[NAME] LINE").
memwatch() {
    local n=$1 t0 pid mpid seen=0 lines now
    shift
    rig_case "$n" "$(case_timeout "$@")"
    rm -f /tmp/s.json
    : > /tmp/$n.out; : > /tmp/$n.mem
    t0=$(up)
    "$@" > /tmp/$n.out 2>&1 < /dev/null &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        mpid=$pid
        [ "$(cat /proc/$pid/comm 2>/dev/null)" = timeout ] && mpid=$(cat /proc/$pid/task/$pid/children 2>/dev/null | cut -d' ' -f1)
        now=$(since "$t0")
        awk -v t="$now" '/^RssShmem:/ { s = $2 } /^RssAnon:/ { a = $2 } END { if (s != "" || a != "") print t, s + 0, a + 0 }' /proc/${mpid:-$pid}/status >> /tmp/$n.mem 2>/dev/null
        # Whole lines only: the console may be caught in the middle of one.
        tr -d '\r' < /tmp/$n.out > /tmp/$n.lines
        [ "$(tail -c 1 /tmp/$n.lines | od -An -tx1 | tr -d ' ')" = 0a ] || sed -i '$d' /tmp/$n.lines
        [ -n "${MEMWATCH_TICK:-}" ] && $MEMWATCH_TICK /tmp/$n.lines
        lines=$(grep -c '^axvm-balloon: ' /tmp/$n.lines)
        if [ "$lines" -gt "$seen" ]; then
            grep '^axvm-balloon: ' /tmp/$n.lines | sed -n "$((seen + 1)),${lines}p" | while IFS= read -r l; do
                echo "# $now $l" >> /tmp/$n.mem
                echo "[$n] $l"
            done
            seen=$lines
        fi
        usleep 100000
    done
    wait $pid; st=$?
}

# mem_at NAME TEXT [COLUMN]: MiB of the first sample at or after the guest line TEXT (column 2:
# RssShmem, axvm's guest memory; 3: RssAnon, QEMU's), "-" if the line never came.
mem_at() {
    awk -v m="$2" -v c="${3:-2}" '
        /^# / { if (at == "" && index($0, m) > 0) at = $2 + 0; next }
        at != "" && $1 + 0 >= at { printf "%.1f", $c / 1024; found = 1; exit }
        END { if (!found) printf "-" }' /tmp/$1.mem
}

# mem_low NAME FROM TO: MiB of the lowest sample from the guest line FROM until the line TO
# (column 2, RssShmem), "-" if either line never came.
mem_low() {
    awk -v f="$2" -v e="$3" '
        /^# / { if (from == "" && index($0, f) > 0) from = $2 + 0; if (to == "" && index($0, e) > 0) to = $2 + 0; next }
        { t[n] = $1 + 0; m[n] = $2 + 0; n++ }
        END {
            if (from == "" || to == "") { printf "-"; exit }
            for (i = 0; i < n; i++) if (t[i] >= from && t[i] <= to && (low == "" || m[i] < low)) low = m[i]
            if (low == "") printf "-"; else printf "%.1f", low / 1024
        }' /tmp/$1.mem
}

# balloon_api_tick LINES (memwatch's MEMWATCH_TICK): once the control socket is there, the
# balloon's target set to 64 MiB through it (PATCH /balloon); when the guest has waited for
# reporting (LINES, its console so far), the balloon read back (GET /balloon).
balloon_api_tick() {
    if [ ! -s /tmp/api-patch.out ] && [ -S /tmp/api.sock ]; then
        /bin/api-request /tmp/api.sock PATCH /balloon '{"amount_mib": 64}' > /tmp/api-patch.out 2>&1
    fi
    if [ ! -s /tmp/api-get.out ] && [ -S /tmp/api.sock ] && grep -q '^axvm-balloon: waited for reporting' "$1"; then
        /bin/api-request /tmp/api.sock GET /balloon > /tmp/api-get.out 2>&1
    fi
}

# linux_balloon_case: Linux on 2 vCPUs (arm64: 1) with 64 KiB fault-around and a virtio-balloon whose
# target is set to 64 MiB at start through the control socket (--balloon --api-socket; PATCH
# /balloon as soon as the socket is there): the guest inflates it, writes
# 256 MiB into a tmpfs, frees it and waits for free page reporting, then writes the 256 MiB
# again and checksums them (scripts/linux-guest-initramfs.sh axvm.balloon). The process's
# RssShmem (the guest memory it holds) is sampled: after reporting at least 90 % of what the
# write added must be back on the host. From axvm's statistics: what went back and came back as
# re-faults; the host check says the library and mincore agree.
linux_balloon_case() {
    local ret actual refault before peak after again vcpus=2
    # arm64: one vCPU. On two, Debian's arm64 guest still held about 31 MiB of the freed
    # memory unreported 20 s after the delete (x86: 10 MiB); on one, 2 MiB.
    [ "$ARCH" = aarch64 ] && vcpus=1
    rm -f /tmp/api.sock /tmp/api-patch.out /tmp/api-get.out
    MEMWATCH_TICK=balloon_api_tick memwatch linux-balloon /axvm boot $LINUX_ARGS --timeout 300 --stats-json /tmp/s.json --vcpus $vcpus \
        --fault-around 64K --balloon --api-socket /tmp/api.sock --cmdline "$LINUX_CMDLINE axvm.balloon"
    name=linux-balloon
    result "$(linux_line)"
    echo "rig: linux-balloon: control socket: PATCH $(tr '\n' ' ' < /tmp/api-patch.out 2>/dev/null); GET after reporting: $(tr -d '\n' < /tmp/api-get.out 2>/dev/null)"
    name=linux-balloon-api
    if grep -q '^HTTP/1.1 204' /tmp/api-patch.out 2>/dev/null && grep -q '"target_mib": 64,' /tmp/api-get.out 2>/dev/null \
        && grep -q '"target_pages": 16384,' /tmp/api-get.out 2>/dev/null \
        && [ ! -e /tmp/api.sock ]; then
        result "linux-balloon-api: the target set through the control socket, read back from it, the socket gone at the end"
    else
        result "linux-balloon-api: PATCH '$(head -1 /tmp/api-patch.out 2>/dev/null)', GET '$(head -1 /tmp/api-get.out 2>/dev/null)', socket $([ -e /tmp/api.sock ] && echo left || echo gone)"
    fi
    ret=$(jf balloon_returned_bytes); actual=$(jf balloon_actual_pages); refault=$(jf refaulted_pages)
    before=$(mem_at linux-balloon "writing 256 MiB"); peak=$(mem_at linux-balloon "wrote 256 MiB")
    after=$(mem_low linux-balloon "freed" "waited for reporting"); again=$(mem_at linux-balloon "again")
    echo "rig: linux-balloon: RssShmem $before MiB before the write, $peak MiB after it, $after MiB at the lowest while the guest waited for reporting, $again MiB after the second write; the guest holds ${actual:-?} pages in the balloon, reported $(jf balloon_reported_pages) pages in $(jf balloon_reports) reports, $(mib "${ret:-0}") MiB went back to the host, ${refault:-?} pages faulted in again, $(mib "$(jf populated_bytes)") MiB populated at the end; guest statistics $(jf balloon_guest_stats); $(tr -d '\r' < /tmp/linux-balloon.out | sed -n 's/^axvm-balloon: workload took/workload took/p')"
    name=linux-balloon-returned
    # At least 80 % of what the write added went back to the host in the 20 s after the delete
    # (the lowest sample then: the guest's own allocations while it waits may fault a few pages
    # in again). What the guest reports is its own business (free blocks of 2 MiB and up, as
    # its allocator merged them): the runs so far returned 93-96 % on x86, 87-93 % on arm64.
    # Without reporting, or with a broken hole punch, nothing comes back.
    if [ "${actual:-0}" = 16384 ] && [ "${refault:-0}" -gt 0 ] && [ "$after" != - ] && [ "$before" != - ] && [ "$peak" != - ] \
        && awk -v a="$after" -v b="$before" -v p="$peak" 'BEGIN { exit !(p - a >= 0.8 * (p - b)) }'; then
        result "linux-balloon-returned: the 64 MiB target inflated, at least 80 % of the write's memory back after reporting, pages came back as re-faults"
    else
        result "linux-balloon-returned: the guest holds ${actual:-?} pages, RssShmem $before MiB before the write, $peak MiB after it, $after MiB at the lowest after the delete, ${refault:-?} re-faulted pages"
    fi
}

# returned_after NAME [COLUMN]: seconds from the guest's "freed" line until the memory is back
# within 10 % of the write's growth (90 % of it returned), "-" if not before the end of the
# guest's wait for reporting.
returned_after() {
    awk -v c="${2:-2}" '
        /^# / { if (index($0, "writing 256 MiB")) w = $2 + 0; if (index($0, "wrote 256 MiB") && !index($0, "again")) p = $2 + 0
                if (index($0, "freed")) f = $2 + 0; if (index($0, "waited for reporting")) e = $2 + 0; next }
        { t[n] = $1 + 0; m[n] = $c + 0; n++ }
        END {
            for (i = 0; i < n; i++) { if (b == "" && t[i] >= w) b = m[i]; if (pk == "" && p != "" && t[i] >= p) pk = m[i] }
            for (i = 0; i < n; i++) if (f != "" && t[i] >= f && (e == "" || t[i] <= e) && m[i] <= b + 0.1 * (pk - b)) { printf "%.1f", t[i] - f; exit }
            printf "-"
        }' /tmp/$1.mem
}

# balloon_compare (scripts/kvm-rig.sh balloon): the axvm.balloon workload on axvm with
# --balloon and on QEMU with virtio-balloon-device,free-page-reporting=on, memory sampled every
# 100 ms (axvm: RssShmem, QEMU: RssAnon); the same without a balloon (what reporting costs the
# guest); then 60 s of two writers racing reports on 2 vCPUs (axvm.balloonstorm). The samples
# go out as rig files for scripts/balloon-plot.py.
balloon_compare() {
    local vmm n col
    : > /tmp/balloon
    for vmm in axvm qemu axvm-none qemu-none; do
        case $vmm in
            axvm) memwatch bal-$vmm /axvm boot $LINUX_ARGS --timeout 300 --stats-json /tmp/s.json --balloon --cmdline "$LINUX_CMDLINE axvm.balloon" ;;
            axvm-none) memwatch bal-$vmm /axvm boot $LINUX_ARGS --timeout 300 --stats-json /tmp/s.json --cmdline "$LINUX_CMDLINE axvm.balloon" ;;
            qemu) [ -x $PEER_QEMU ] || continue
                  PEER_APPEND=" axvm.balloon" memwatch bal-$vmm peer_qemu -global virtio-mmio.force-legacy=false \
                      -device virtio-balloon-device,free-page-reporting=on ;;
            qemu-none) [ -x $PEER_QEMU ] || continue
                  PEER_APPEND=" axvm.balloon" memwatch bal-$vmm peer_qemu ;;
        esac
        col=2; case $vmm in qemu*) col=3 ;; esac
        echo "$vmm|$(mem_at bal-$vmm "writing 256 MiB" $col)|$(mem_at bal-$vmm "wrote 256 MiB" $col)|$(mem_at bal-$vmm "freed" $col)|$(returned_after bal-$vmm $col)|$(mem_at bal-$vmm "waited for reporting" $col)|$(mem_at bal-$vmm "again" $col)|$(tr -d '\r' < /tmp/bal-$vmm.out | sed -n 's/^axvm-balloon: workload took \([0-9.]*\) s$/\1/p')|$(tr -d '\r' < /tmp/bal-$vmm.out | grep -c 'checksums agree')" >> /tmp/balloon
        echo "rig: balloon $vmm: $(tail -1 /tmp/balloon)"
        echo "rig-file-begin balloon-$vmm.mem"; cat /tmp/bal-$vmm.mem; echo "rig-file-end"
    done
    memwatch bal-storm /axvm boot $LINUX_ARGS --timeout 400 --stats-json /tmp/s.json --vcpus 2 --balloon --cmdline "$LINUX_CMDLINE axvm.balloonstorm"
    name=balloon-storm
    tr -d '\r' < /tmp/bal-storm.out | grep '^axvm-storm: ' | sed 's/^/[balloon-storm] /'
    echo "rig: balloon-storm: exit $st, host check $(host_check), $(jf balloon_reports) reports of $(jf balloon_reported_pages) pages, $(jf refaulted_pages) re-faulted pages"
    echo
    echo "Free page reporting: 256 MiB written into a guest tmpfs, deleted, then written again; the VMM's guest memory (axvm: RssShmem;"
    echo "$PEER_NAME: RssAnon) sampled every 100 ms, MiB; 'returned' is the time from the delete until 90 % of the write's growth went"
    echo "back; the workload time is the guest's own for the two writes"
    echo "| VMM | before the write | after it | at the delete | 90 % returned after s | after reporting (20 s) | after the second write | workload s | checksums agree |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' /tmp/balloon
    echo
}

# linux_root_case: Linux runs from an ext4 root file system on virtio-blk (root=/dev/vda, the
# image of scripts/linux-guest-rootfs.sh): its init writes a file, reads it back from the disk
# and reboots; a second VM boots the same image and finds the file as written. The image then
# goes out on the console (gzip, base64, as rig file root.img.gz.b64), where kvm-rig.sh checks
# it with the host's e2fsck and debugfs.
linux_root_case() {
    local b
    if [ ! -f /linux/root.img ]; then
        echo "linux-root-1: skipped (no /linux/root.img)"; echo "linux-root-2: skipped (no /linux/root.img)"; return
    fi
    cp /linux/root.img /tmp/root.img
    for b in 1 2; do
        linux_axvm linux-root-$b --disk /tmp/root.img --rng --cmdline "$LINUX_CMDLINE root=/dev/vda"
        result "$(linux_line)"
        name=linux-root-$b-data
        result "linux-root-$b-data: $(tr -d '\r' < /tmp/linux-root-$b.out | sed -n 's/^axvm-root: boot [0-9]*: //p' | head -1)"
    done
    echo "rig-file-begin root.img.gz.b64"
    /bin/busybox gzip -c /tmp/root.img | /bin/busybox base64
    echo "rig-file-end"
    rm -f /tmp/root.img
}

# linux_snapshot_cases: Linux booted lazily on 2 vCPUs and snapshotted at its "axvm-snap: ready" line
# (after writing data it checksummed, scripts/linux-guest-initramfs.sh axvm.snap); restored
# lazily (and then populated), it checksums the data again and reboots; a diff snapshot of that restore, restored
# over its parent, does the same; then 4 clones restored at once from the first snapshot do
# the same. The timing line sets the restore against the boot.
linux_snapshot_cases() {
    local snap=/tmp/linux-snap before boot_s i ok pages
    rm -rf $snap
    linux_axvm linux-snapshot --fault-around 64K --vcpus 2 --cmdline "$LINUX_CMDLINE axvm.snap" \
        --snapshot $snap --snapshot-on "axvm-snap: ready" --snapshot-and-exit
    boot_s=$boot
    pages=$(jf snapshot_pages)
    before=$(tr -d '\r' < /tmp/linux-snapshot.out | sed -n 's/^axvm-snap: before //p')
    result "linux-snapshot: exit $st, $(jf exit | sed "s|$snap|DIR|"), $( [ -n "$before" ] && echo "checksum printed before" || echo "no checksum before")"
    echo "rig: linux-snapshot: boot to init $boot_s s, $pages pages ($(mib $((${pages:-0} * 4096))) MiB) in the snapshot, $(jf snapshot_disk_bytes) bytes on disk, written in $(jf snapshot_total_ns) ns"
    LIVE=1 bootwatch linux-restore /axvm restore $snap --marker "axvm-snap: resumed" --stats-json /tmp/s.json
    name=linux-restore
    local after
    after=$(tr -d '\r' < /tmp/linux-restore.out | sed -n 's/^axvm-snap: after //p')
    if [ -n "$before" ] && [ "$after" = "$before" ]; then ok="the checksum after the restore is the one before"
    else ok="checksum before '${before:-?}', after '${after:-?}'"; fi
    result "linux-restore: exit $st, $(jf exit), $ok, host check $(host_check)"
    echo "rig: linux-restore: first guest instruction after $(jf setup_seconds) s, its next console line ('resumed') at $(jf init_marker_seconds) s (boot to init: $boot_s s), run $(jf run_seconds) s to the reboot, $(jf restore_pages_copied) of $(jf restore_snapshot_pages) snapshot pages copied in, guest memory $(mib "$(jf populated_bytes)") MiB"
    # The same snapshot restored populated (every page copied in before the first instruction).
    LIVE=1 bootwatch linux-restore-populated /axvm restore $snap --populate --marker "axvm-snap: resumed" --stats-json /tmp/s.json
    name=linux-restore-populated
    after=$(tr -d '\r' < /tmp/linux-restore-populated.out | sed -n 's/^axvm-snap: after //p')
    if [ -n "$before" ] && [ "$after" = "$before" ]; then ok="the checksum after the restore is the one before"
    else ok="checksum before '${before:-?}', after '${after:-?}'"; fi
    result "linux-restore-populated: exit $st, $(jf exit), $ok, host check $(host_check)"
    echo "rig: linux-restore-populated: first guest instruction after $(jf setup_seconds) s, its next console line at $(jf init_marker_seconds) s, $(jf restore_pages_copied) of $(jf restore_snapshot_pages) snapshot pages copied in"
    # A diff snapshot of a restore at the guest's next line (the pages written since the
    # restore), restored over its parent: the guest goes on to print the same checksum.
    local diff=/tmp/linux-snap-diff
    rm -rf $diff
    LIVE=1 bootwatch linux-diff-snapshot /axvm restore $snap --snapshot $diff --snapshot-diff --snapshot-on "axvm-snap: resumed" \
        --snapshot-and-exit --stats-json /tmp/s.json
    name=linux-diff-snapshot
    result "linux-diff-snapshot: exit $st, $(jf exit | sed "s|$diff|DIR|")"
    echo "rig: linux-diff-snapshot: $(jf snapshot_pages) pages in the diff, $pages in its parent"
    LIVE=1 bootwatch linux-diff-restore /axvm restore $diff --stats-json /tmp/s.json
    name=linux-diff-restore
    after=$(tr -d '\r' < /tmp/linux-diff-restore.out | sed -n 's/^axvm-snap: after //p')
    if [ -n "$before" ] && [ "$after" = "$before" ]; then ok="the checksum after the restore is the one before"
    else ok="checksum before '${before:-?}', after '${after:-?}'"; fi
    result "linux-diff-restore: exit $st, $(jf exit), $ok, host check $(host_check)"
    rm -rf $diff
    linux_clones 4 "$before" "$pages"
    name=linux-clones
    result "linux-clones: $clones_ok of 4 clones restored at once read back the checksum and rebooted"
}

# linux_disk_snapshot_case: Linux with a disk, an rng and a balloon (32 MiB target),
# snapshotted while a writer keeps requests in flight on /dev/vda
# (scripts/linux-guest-initramfs.sh axvm.disksnap), restored: the writer's requests complete in
# the restored VM, its data reads back, the image holds it, and the balloon's target is back.
linux_disk_snapshot_case() {
    local snap=/tmp/linux-disk-snap w r host
    rm -rf $snap
    /bin/busybox dd if=/dev/zero of=/tmp/vda.img bs=1M count=8 2>/dev/null
    linux_axvm linux-disk-snapshot --disk /tmp/vda.img --rng --balloon --balloon-size 32M --cmdline "$LINUX_CMDLINE axvm.disksnap" \
        --snapshot $snap --snapshot-on "axvm-snap: ready" --snapshot-and-exit
    result "linux-disk-snapshot: exit $st, $(jf exit | sed "s|$snap|DIR|")"
    LIVE=1 bootwatch linux-disk-restore /axvm restore $snap --marker "axvm-snap: resumed" --stats-json /tmp/s.json
    name=linux-disk-restore
    result "linux-disk-restore: exit $st, $(jf exit), host check $(host_check)"
    name=linux-disk-restore-balloon
    result "linux-disk-restore-balloon: the balloon came back with a target of $(jf balloon_target_pages) pages"
    w=$(tr -d '\r' < /tmp/linux-disk-restore.out | sed -n 's/^axvm-disksnap: vda wrote \([0-9a-f]*\) read .*/\1/p')
    r=$(tr -d '\r' < /tmp/linux-disk-restore.out | sed -n 's/^axvm-disksnap: vda wrote [0-9a-f]* read \([0-9a-f]*\)$/\1/p')
    host=$(/bin/busybox dd if=/tmp/vda.img bs=64k count=16 2>/dev/null | /bin/busybox md5sum | cut -c1-32)
    name=linux-disk-restore-data
    if [ -n "$w" ] && [ "$w" = "$r" ] && [ "$w" = "$host" ]; then
        result "linux-disk-restore-data: the restored guest read back what it wrote, and the image file holds it"
    else
        result "linux-disk-restore-data: wrote ${w:-?}, read back ${r:-?}, the image holds $host"
    fi
    rm -rf $snap /tmp/vda.img
}

# linux_clones N BEFORE PAGES: N lazy restores of /tmp/linux-snap at once; sets clones_ok to
# how many printed the checksum BEFORE again and rebooted, and prints their guest memory
# (populated_bytes: the memfd pages each copied in or populated, private to it; RssShmem
# would also count the mapped snapshot file, on the rig's tmpfs) against N full copies of
# the snapshot's PAGES. The memory file's page cache is shared by all of them.
linux_clones() {
    local n=$1 before=$2 pages=$3 i pids="" private=0 copied=0 t0
    rig_case linux-clones-$n 300
    t0=$(up)
    for i in $(seq 1 "$n"); do
        /axvm restore /tmp/linux-snap --marker "axvm-snap: resumed" --stats-json /tmp/clone$i.json > /tmp/clone$i.out 2>&1 &
        pids="$pids $!"
    done
    # Their PIDs only: a bare `wait` would also wait for answer_requests, which never ends.
    for i in $pids; do wait $i; done
    clones_ok=0
    for i in $(seq 1 "$n"); do
        if grep -q '"exit_status": 0,' /tmp/clone$i.json 2>/dev/null && [ -n "$before" ] \
            && tr -d '\r' < /tmp/clone$i.out | grep -qx "axvm-snap: after $before"; then clones_ok=$((clones_ok + 1)); fi
        private=$((private + $(sed -n 's/^  "populated_bytes": \([0-9]*\),/\1/p' /tmp/clone$i.json 2>/dev/null || echo 0)))
        copied=$((copied + $(sed -n 's/^  "restore_pages_copied": \([0-9]*\),/\1/p' /tmp/clone$i.json 2>/dev/null || echo 0)))
    done
    echo "rig: linux-clones-$n: $clones_ok of $n right in $(since "$t0") s; their guest memory (memfd, private to each) together $(mib $private) MiB, of which $(mib $((copied * 4096))) MiB copied in from the snapshot; against $n full copies of the snapshot: $(mib $((n * ${pages:-0} * 4096))) MiB; the snapshot file's page cache, shared: $(mib $((${pages:-0} * 4096))) MiB at most"
}

# linux_restore_rounds N: N lazy and N populated restores of /tmp/linux-snap, interleaved;
# the medians of the first guest instruction and of the next console line, against the
# boot to init of linux-snapshot.
linux_restore_rounds() {
    local n=$1 r lazy_set="" lazy_line="" pop_set="" pop_line=""
    for r in $(seq 1 "$n"); do
        rig_case linux-restore-round-$r 60
        /axvm restore /tmp/linux-snap --quiet --marker "axvm-snap: resumed" --stats-json /tmp/s.json > /dev/null 2>&1
        lazy_set="$lazy_set $(jf setup_seconds)"; lazy_line="$lazy_line $(jf init_marker_seconds)"
        /axvm restore /tmp/linux-snap --populate --quiet --marker "axvm-snap: resumed" --stats-json /tmp/s.json > /dev/null 2>&1
        pop_set="$pop_set $(jf setup_seconds)"; pop_line="$pop_line $(jf init_marker_seconds)"
    done
    awk -v ls="$lazy_set" -v ll="$lazy_line" -v ps="$pop_set" -v pl="$pop_line" "$AWK_MEDIAN"'
        BEGIN { printf "rig: restore, median of %d: lazy: first instruction %.1f ms, next console line %.3f s; populated: %.1f ms, %.3f s\n",
                split(ls, x, " "), median(ls) * 1000, median(ll), median(ps) * 1000, median(pl) }'
}

# clean_log_case LOG...: the kernel printed no line a user reads as an error (Error, Fatal,
# bug, Warning, a call trace) in these boots; the offending lines otherwise.
clean_log_case() {
    name=linux-clean-log
    local bad
    bad=$(cat "$@" | tr -d '\r' | grep -e Error -e Fatal -e bug -e Warning -e WARNING -e 'Call Trace' | head -5)
    if [ -z "$bad" ]; then
        result "linux-clean-log: no Error, Fatal, bug or Warning lines in $# boot logs"
    else
        result "linux-clean-log: $(echo "$bad" | tr '\n' '|')"
    fi
}

# linux_cases_aarch64: the arm64 Linux boots (part of every arm64 `test`, on both CPU
# models): lazily with 4 KiB fault-around, rebooting (PSCI SYSTEM_RESET); populated, powering
# off (PSCI SYSTEM_OFF); lazily with 64 KiB fault-around on two vCPUs (the second started by
# PSCI CPU_ON; the guest runs a process on each); the virtio, balloon and ext4 root cases;
# snapshots (vGIC, UART and virtio state) restored and cloned as on x86.
linux_cases_aarch64() {
    echo "rig: Linux on axvm (arm64, -cpu $CPU): $(ls -l /linux/vmlinuz | awk '{print $5}')-byte Image, $LINUX_MEM, cmdline \"$LINUX_CMDLINE\""
    linux_axvm linux-lazy --fault-around 4K
    result "$(linux_line)"
    peer_row "axvm lazy 4K"
    local lazy_pop lazy_mt lazy_boot=$boot
    lazy_pop=$(jf populated_bytes); lazy_mt=$(jf mem_total_kib)
    lazy_touched_case "$lazy_pop"
    linux_axvm linux-populated-poweroff --populate --cmdline "$LINUX_CMDLINE axvm.end=poweroff"
    result "$(linux_line)"
    peer_row "axvm populated"
    local pop_mt pop_boot=$boot
    pop_mt=$(jf mem_total_kib)
    memtotal_case "$lazy_mt" "$pop_mt"
    linux_axvm linux-lazy-64K-2vcpus --fault-around 64K --vcpus 2 --fault-map /tmp/linux-faults-$CPU.svg
    result "$(linux_line)"
    name=linux-2vcpus-seen
    result "linux-2vcpus-seen: $(tr -d '\r' < /tmp/linux-lazy-64K-2vcpus.out | grep -c -e '^axvm-linux: 2 CPUs online' -e '^axvm-linux: ran on CPU [01]$') of 3 lines"
    fault_map_case /tmp/linux-faults-$CPU.svg
    local boot64=$boot
    linux_virtio_case
    linux_balloon_case
    linux_root_case
    linux_snapshot_cases
    linux_disk_snapshot_case
    echo "rig: Linux booted with $LINUX_MEM of lazy RAM and touched $(mib "${lazy_pop:-0}") MiB; MemTotal $lazy_mt kB (populated run: $pop_mt kB); boot to init $lazy_boot s lazy 4K, $pop_boot s populated, $boot64 s lazy 64K on 2 vCPUs"
}

# exit_profile: one axvm boot (lazy 64K) and one QEMU microvm boot with KVM's tracepoints on
# (kvm_exit, kvm_entry, kvm_pio, kvm_userspace_exit, through tracefs). For each VMM: exits by
# reason, with their count and the time from each exit to the vCPU's next entry (for hlt:
# time the vCPU slept; for io: the VMM's handling included), port I/O by port, exits to
# userspace by reason. `scripts/kvm-rig.sh linux x86_64` prints it (not part of `test`).
exit_profile() {
    local t=/sys/kernel/tracing vmm e
    [ -d $t/events ] || mount -t tracefs nodev $t 2>/dev/null
    if [ ! -f $t/events/kvm/kvm_exit/enable ]; then echo "rig: exit profile: no kvm tracepoints"; return; fi
    echo 131072 > $t/buffer_size_kb
    for vmm in axvm qemu; do
        echo 0 > $t/tracing_on
        echo > $t/trace
        for e in kvm_exit kvm_entry kvm_pio kvm_userspace_exit; do echo 1 > $t/events/kvm/$e/enable; done
        echo 1 > $t/tracing_on
        if [ $vmm = axvm ]; then
            bootwatch profile-axvm /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --fault-around 64K --stats-json /tmp/s.json
        else
            [ -x $PEER_QEMU ] || continue
            bootwatch profile-qemu peer_qemu
        fi
        echo 0 > $t/tracing_on
        echo "rig: exit profile $vmm: boot to init $boot s, exit $st, guest uptime at init $(guest_uptime) s; trace entries lost: $(sed -n 's/^overrun: //p' $t/per_cpu/cpu0/stats)"
        awk -v vmm=$vmm '
            {
                for (i = 2; i <= NF; i++) if ($i ~ /^kvm_[a-z_]+:$/) break
                if (i > NF) next
                ts = $(i - 1); sub(":", "", ts); task = $1
                if ($i == "kvm_exit:") {
                    for (j = i; j < NF; j++) if ($j == "reason") break
                    r = $(j + 1); start[task] = ts; why[task] = r; n[r]++; total++
                } else if ($i == "kvm_entry:") {
                    if (task in start) { ms[why[task]] += (ts - start[task]) * 1000; delete start[task] }
                } else if ($i == "kvm_pio:") {
                    p = $(i + 1) " " $(i + 3); pio[p]++
                } else if ($i == "kvm_userspace_exit:") {
                    u[$(i + 2)]++
                }
            }
            END {
                for (r in n) printf "rig: exits %s|%s|%d|%.1f\n", vmm, r, n[r], ms[r]
                for (p in pio) printf "rig: pio %s|%s|%d\n", vmm, p, pio[p]
                for (r in u) printf "rig: userspace exits %s|%s|%d\n", vmm, r, u[r]
                printf "rig: exits %s|all|%d|-\n", vmm, total
            }' $t/trace | sort -t '|' -k3 -n -r
        for e in kvm_exit kvm_entry kvm_pio kvm_userspace_exit; do echo 0 > $t/events/kvm/$e/enable; done
    done
    echo > $t/trace
}

# linux_soak N [ARGS...]: N lazy boots in a row (`scripts/kvm-rig.sh soak x86_64 N`), one line
# each; a boot that does not end with the guest's reset shows its console's last lines and
# axvm's report. For hunting boots that hang now and then.
linux_soak() {
    local n=$1 i=1 bad=0
    shift
    echo "rig: soak: $n boots of axvm boot $LINUX_ARGS $*"
    while [ $i -le $n ]; do
        bootwatch soak /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json "$@"
        echo "rig: soak boot $i of $n: exit $st, $(jf exit), init at $boot s, $dt s in all, $(jf serial_irq_resamples) resamples, $(jf halted_wakeups) halted wake-ups, $(jf exits) exits"
        [ -f /tmp/s.json ] && sed -n 's/^  "interrupt_waits": \[\(..*\)\],*$/\1/p' /tmp/s.json | sed 's/", "/"\n"/g' | sed 's/^/rig:   interrupt wait /'
        if [ "$st" != 0 ]; then
            bad=$((bad + 1))
            tr -d '\r' < /tmp/soak.out | tail -25 | sed 's/^/[soak] /'
        fi
        i=$((i + 1))
    done
    echo "rig: soak: $bad of $n boots failed"
}

# linux_bad_input: axvm boot refuses malformed kernels, oversized initrds and command lines
# (exit status 2 and the reason, before any VM exists). Part of every `test`.
linux_bad_input() {
    rm -f /tmp/s.json
    axrun linux-bad-kernel boot --kernel /axvm
    result "linux-bad-kernel: exit $st, $(sed -n 's/^axvm: error: //p' /tmp/out)"
    head -c 1000000 /linux/vmlinuz > /tmp/truncated.bin
    axrun linux-truncated boot --kernel /tmp/truncated.bin
    result "linux-truncated: exit $st, $(sed -n 's/^axvm: error: \(kernel [^:]*: truncated\):.*/\1/p' /tmp/out)"
    # RAM that holds the kernel but not the kernel again as an initrd.
    axrun linux-initrd-too-big boot --kernel /linux/vmlinuz --initrd /linux/vmlinuz --memory $([ "$ARCH" = aarch64 ] && echo 64M || echo 84M)
    local fit="initrd fits?"
    grep -q '^axvm: error: initrd /linux/vmlinuz: .* do not fit in RAM' /tmp/out && fit="initrd does not fit in RAM"
    result "linux-initrd-too-big: exit $st, $fit"
    axrun linux-cmdline-too-long boot --kernel /linux/vmlinuz --cmdline "$(head -c 3000 /dev/zero | tr '\0' a)"
    result "linux-cmdline-too-long: exit $st, $(sed -n 's/^axvm: error: //p' /tmp/out)"
    # The device thread's sandbox (the other roles' are tested by swift test): the test hook
    # makes the virtio-rng thread call execve right after it confined itself; the process must
    # end by SIGSYS (159 in the shell), the report naming the thread and the call.
    export AXVM_SANDBOX_PROBE=device:execve
    axrun linux-sandbox-device boot --kernel /linux/vmlinuz --rng --memory 128M
    unset AXVM_SANDBOX_PROBE
    result "linux-sandbox-device: exit $st, $(sed -n 's/^axvm: sandbox: \(the device thread made system call execve\) .*/\1/p' /tmp/out)"
}

# The QEMU peer of each architecture, booting the same kernel, initramfs and RAM: microvm on
# x86 with an i8042 as axvm has one (microvm has none, and reboot=k without it falls back to
# a real-mode BIOS restart that boots the guest again and again; -no-reboot only catches a
# reset); virt on arm64 with the host's GIC, whose console is its PL011 (ttyAMA0 for axvm's
# ttyS0, the only difference in the command line). peer_qemu ARGS...: execs it (at most 300 s),
# ARGS first, so that a background `peer_qemu &` has QEMU's pid; never call it in the foreground.
if [ "$ARCH" = aarch64 ]; then
    PEER_QEMU=/usr/bin/qemu-system-aarch64 PEER_NAME="QEMU virt" PEER_TAG=qemu-virt
    peer_qemu() {
        exec timeout -s KILL 300 $PEER_QEMU -enable-kvm -M virt,gic-version=host -cpu host -m $LINUX_MEM -nographic -no-reboot -nic none "$@" \
            -kernel /linux/vmlinuz -initrd /linux/initramfs.cpio.gz -append "$(echo "$LINUX_CMDLINE" | sed 's/ttyS0/ttyAMA0/')${PEER_APPEND:-}"
    }
else
    PEER_QEMU=/usr/bin/qemu-system-x86_64 PEER_NAME="QEMU microvm" PEER_TAG=qemu-microvm
    peer_qemu() {
        exec timeout -s KILL 300 $PEER_QEMU -enable-kvm -M microvm -cpu host -m $LINUX_MEM -device i8042 -nographic -no-reboot "$@" \
            -kernel /linux/vmlinuz -initrd /linux/initramfs.cpio.gz -append "$LINUX_CMDLINE${PEER_APPEND:-}"
    }
fi

# disk_bench ROUNDS (scripts/kvm-rig.sh disk): per round, axvm and QEMU (virtio-blk-device on
# virtio-mmio version 2) boot with the same 256 MiB image and run Benchmarks/diskbench in the
# guest (axvm.diskbench), and each boots once more without it; KVM's exits (kvm_exit
# tracepoint events) of the benchmark boot less the plain boot's, over the benchmark's
# requests, are its exits per request. Medians of the rounds.
disk_bench() {
    local rounds=${1:-3} r=1 img=/tmp/bench.img t=/sys/kernel/tracing vmm bench plain kexits
    local requests=$((2 * 16 + 2 * 2000))
    [ -d $t/events ] || mount -t tracefs nodev $t 2>/dev/null
    if [ -f $t/events/kvm/kvm_exit/enable ]; then echo 131072 > $t/buffer_size_kb; else echo "rig: disk: no kvm tracepoints: no exit counts"; fi
    /bin/busybox dd if=/dev/zero of=$img bs=1M count=256 2>/dev/null
    : > /tmp/disk; : > /tmp/diskboot
    disk_boot() {  # disk_boot VMM NAME EXTRA [nodev]: one boot; kexits: KVM's exits during it (kvm_exit events)
        local axdisk="--disk $img" qdisk="-drive id=d0,file=$img,format=raw,if=none -device virtio-blk-device,drive=d0"
        [ "${4:-}" = nodev ] && axdisk="" && qdisk=""
        if [ -f $t/events/kvm/kvm_exit/enable ]; then
            echo 0 > $t/tracing_on; echo > $t/trace
            echo 1 > $t/events/kvm/kvm_exit/enable; echo 1 > $t/tracing_on
        fi
        if [ $1 = axvm ]; then
            LIVE=1 bootwatch $2 /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE$3" $axdisk
        else
            PEER_APPEND=$3 LIVE=1 bootwatch $2 peer_qemu -global virtio-mmio.force-legacy=false $qdisk
        fi
        kexits=-
        if [ -f $t/events/kvm/kvm_exit/enable ]; then
            echo 0 > $t/tracing_on; echo 0 > $t/events/kvm/kvm_exit/enable
            kexits=$(grep -c 'kvm_exit:' $t/trace)
            [ "$(sed -n 's/^overrun: //p' $t/per_cpu/cpu0/stats)" = 0 ] || kexits=-
        fi
    }
    while [ $r -le $rounds ]; do
        echo "rig: disk round $r of $rounds"
        for vmm in axvm qemu; do
            [ $vmm = qemu ] && [ ! -x $PEER_QEMU ] && continue
            disk_boot $vmm disk-$vmm " axvm.diskbench"
            bench=$kexits
            disk_boot $vmm disk-$vmm-plain ""
            plain=$kexits
            echo "$vmm|disk|$boot" >> /tmp/diskboot
            disk_boot $vmm disk-$vmm-nodev "" nodev
            echo "$vmm|none|$boot" >> /tmp/diskboot
            tr -d '\r' < /tmp/disk-$vmm.out | sed -n 's/^diskbench: \([a-zA-Z0-9-]*\) \([0-9.]*\) MB\/s [0-9]* IOPS p50 \([0-9.]*\) us p99 \([0-9.]*\) us \([0-9.]*\) interrupts\/request$/\1 \2 \3 \4 \5/p' \
                | while read -r pat mbs p50 p99 irq; do
                    echo "$vmm|$pat|$mbs|$p50|$p99|$irq|$(awk -v b="$bench" -v p="$plain" -v n=$requests 'BEGIN { if (b == "-" || p == "-") print "-"; else printf "%.2f", (b - p) / n }')" >> /tmp/disk
                done
            echo "rig:   $vmm: benchmark boot $bench exits, plain boot $plain"
        done
        r=$((r + 1))
    done
    rm -f $img
    echo
    echo "Disk, virtio-blk on a 256 MiB raw image in the rig's tmpfs, O_DIRECT in the guest (Benchmarks/diskbench), median of $rounds:"
    echo "MB/s and p50 latency per pattern; interrupts per request (the guest's /proc/interrupts); KVM exits per request"
    echo "over all four patterns (benchmark boot less a plain boot, over $requests requests)"
    echo "| pattern | axvm MB/s | $PEER_NAME MB/s | ratio | axvm p50 us | peer p50 us | axvm irq/req | peer irq/req | axvm exits/req | peer exits/req |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for pat in seq-write-4M seq-read-4M rand-write-4K rand-read-4K; do
        awk -F'|' -v pat=$pat "$AWK_MEDIAN"'
            $2 == pat { m[$1, "mbs"] = m[$1, "mbs"] " " $3; m[$1, "p50"] = m[$1, "p50"] " " $4; m[$1, "irq"] = m[$1, "irq"] " " $6; m[$1, "ex"] = m[$1, "ex"] " " $7 }
            END {
                a = median(m["axvm", "mbs"]); q = median(m["qemu", "mbs"])
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", pat, a, q, (q + 0 > 0 && a != "-") ? sprintf("%.2fx", a / q) : "-",
                    median(m["axvm", "p50"]), median(m["qemu", "p50"]), median(m["axvm", "irq"]), median(m["qemu", "irq"]),
                    median(m["axvm", "ex"]), median(m["qemu", "ex"])
            }' /tmp/disk
    done
    echo
    echo "Boot to init with the disk and without devices (what the device costs), seconds, median of $rounds:"
    awk -F'|' "$AWK_MEDIAN"'
        { b[$1, $2] = b[$1, $2] " " $3 }
        END {
            printf "| VMM | with a virtio-blk disk | no devices |\n|---|---|---|\n"
            printf "| axvm | %s | %s |\n| peer | %s | %s |\n", median(b["axvm", "disk"]), median(b["axvm", "none"]), median(b["qemu", "disk"]), median(b["qemu", "none"])
        }' /tmp/diskboot
    echo
}

# guest_uptime: the guest's own clock at init in the last boot's console (the initramfs
# prints it after the marker), "-" if absent.
guest_uptime() {
    local u
    u=$(tr -d '\r' < "$last_out" | sed -n 's/^axvm-linux: uptime at init \([0-9.]*\) s$/\1/p' | head -1)
    echo "${u:--}"
}

# peer_row LABEL: the last axvm boot (bootwatch, /tmp/s.json) as a row of the comparison.
peer_row() {
    echo "$1|$boot|$rss|$(awk -v b="$(jf populated_at_marker_bytes)" 'BEGIN { printf "%.1f", b / 1048576 }')|$st|$(jf init_marker_seconds)|$(guest_uptime)" >> /tmp/peer
}

# linux_peer ROUNDS [CONFIGS]: axvm lazy 4K, lazy 64K (lazy 2M), populated and the QEMU peer boot the same
# kernel and initramfs with the same command line and RAM, ROUNDS times interleaved; boot to
# init (the marker seen on the console) and memory, side by side. CONFIGS (default "lazy
# lazy64 populate qemu") picks the boots; rows already in /tmp/peer (peer_row) are kept.
linux_peer() {
    local rounds=$1 configs=${2:-lazy lazy64 populate qemu} r=1 qanon0=-
    [ -f /tmp/peer ] || : > /tmp/peer
    if [ -x $PEER_QEMU ]; then
        # QEMU's own anonymous memory without the guest running (-S: paused at start).
        peer_qemu -S > /tmp/qs.out 2>&1 < /dev/null &
        local qp=$!
        sleep 3
        qanon0=$(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$qp/status 2>/dev/null)
        kill $qp 2>/dev/null; wait $qp 2>/dev/null
    else
        echo "rig: no $PEER_QEMU: no QEMU peer"
    fi
    while [ $r -le $rounds ]; do
        echo "rig: Linux boot round $r of $rounds ($configs)"
        for cfg in $configs; do
            case $cfg in
                lazy) bootwatch peer-lazy /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json --fault-around 4K
                      peer_row "axvm lazy 4K" ;;
                lazy64) bootwatch peer-lazy64 /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json --fault-around 64K
                      peer_row "axvm lazy 64K" ;;
                lazy64nosb) bootwatch peer-lazy64nosb /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json --fault-around 64K --no-sandbox
                      peer_row "axvm lazy 64K, --no-sandbox" ;;
                lazy2m) bootwatch peer-lazy2m /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json --fault-around 2M
                      peer_row "axvm lazy 2M" ;;
                populate) bootwatch peer-pop /axvm boot $LINUX_ARGS --cmdline "$LINUX_CMDLINE" --stats-json /tmp/s.json --populate
                      peer_row "axvm populated" ;;
                qemu) [ -x $PEER_QEMU ] || continue
                      bootwatch peer-qemu peer_qemu
                      echo "$PEER_NAME|$boot|$rss|$(awk -v a="$anon" -v b="$qanon0" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "?"; else printf "%.1f", (a - b) / 1024 }')|$st|-|$(guest_uptime)" >> /tmp/peer
                      [ $r = 1 ] && tr -d '\r' < /tmp/peer-qemu.out | grep -e 'axvm-linux' -e MemTotal | sed "s/^/[$PEER_TAG] /" ;;
            esac
            echo "rig:   $(tail -1 /tmp/peer)"
        done
        r=$((r + 1))
    done
    echo
    echo "Linux boot, $LINUX_MEM, same kernel/initramfs/cmdline, median of $rounds: seconds from process start to the init"
    echo "marker on the console (polled every 50 ms), the process's VmRSS then, guest memory populated then (axvm: AddrSpace's"
    echo "populated bytes; $PEER_NAME: RssAnon growth over a paused QEMU's $qanon0 kB); axvm's own marker time; the guest's own"
    echo "clock (/proc/uptime) at init: the rest of the boot time went before the kernel's clock started"
    echo "| VMM            | boot to init s | VmRSS at init MiB | guest memory populated MiB | exit | axvm's own s | guest uptime at init s |"
    echo "|----------------|----------------|-------------------|----------------------------|------|--------------|------------------------|"
    awk -F'|' "$AWK_MEDIAN"'
        { if (!($1 in b)) order[++k] = $1
          b[$1] = b[$1] " " $2; r[$1] = r[$1] " " ($3 == "-" || $3 == "" ? "" : $3 / 1024); p[$1] = p[$1] " " $4; s[$1] = s[$1] " " $5; o[$1] = o[$1] " " $6
          if ($7 != "" && $7 != "-") u[$1] = u[$1] " " $7 }
        END { for (i = 1; i <= k; i++) { l = order[i]
                  printf "| %-14s | %14s | %17.1f | %26s | %4s | %12s | %22s |\n", l, median(b[l]), median(r[l]), median(p[l]), s[l], median(o[l]), median(u[l]) } }' /tmp/peer
    echo
}

# overlap_case: two vCPUs touching the same pages (overlap mode), two fault threads: each
# page once. Both architectures' suites.
overlap_case() {
    axrun memtest-overlap-2vcpus run /guests/memtest.bin --memory $MEM --order random --vcpus 2 --fault-threads 2 \
        --memtest-mode overlap --timeout 300 --stats-json /tmp/s.json
    result "$(memtest_line)"
}

# memtest_snapshot_cases: memtest on 2 vCPUs (split, random order, both of the rig's CPUs)
# snapshotted at vCPU 0's "memtest: halfway", then restored lazily and populated: each
# restore must finish with the checksum of an uninterrupted run (arm64 and riscv64: every
# register KVM_GET_REG_LIST names and the MP state, Snapshot/OneRegState.swift).
memtest_snapshot_cases() {
    local snap=/tmp/memtest-snap pin=$PIN
    PIN=
    rm -rf $snap
    axrun memtest-snapshot run /guests/memtest.bin --memory $MEM --order random --vcpus 2 --fault-threads 2 \
        --snapshot $snap --snapshot-on "memtest: halfway" --snapshot-and-exit --timeout 300 --stats-json /tmp/s.json
    result "memtest-snapshot: exit $st, $(jf exit | sed "s|$snap|DIR|")"
    echo "rig: memtest-snapshot: $(jf snapshot_pages) pages saved in $(jf snapshot_total_ns) ns, run $(jf run_seconds) s"
    axrun memtest-restore-lazy restore $snap --timeout 300 --stats-json /tmp/s.json
    result "$(memtest_line)"
    echo "rig: memtest-restore-lazy: $(jf restore_pages_copied) of $(jf restore_snapshot_pages) snapshot pages copied in, set-up $(jf setup_seconds) s, run $(jf run_seconds) s"
    axrun memtest-restore-populated restore $snap --populate --timeout 300 --stats-json /tmp/s.json
    result "$(memtest_line)"
    echo "rig: memtest-restore-populated: $(jf restore_pages_copied) pages copied in first, set-up $(jf setup_seconds) s, run $(jf run_seconds) s"
    PIN=$pin
    rm -rf $snap
}

# max_resident_case: memtest with --max-resident below what it touches: the pager fails with
# out of memory, and populated memory stays within the cap. Both architectures' suites.
max_resident_case() {
    axrun max-resident run /guests/memtest.bin --memory $MEM --max-resident $CAP --timeout 300 --stats-json /tmp/s.json
    local msg cap
    msg=$(exit_msg)
    case "$msg" in "lazy pager failed: "*"out of memory"*) msg="lazy pager failed: out of memory" ;; esac
    cap="populated $(jf populated_bytes) bytes, over the cap"
    [ -n "$(jf populated_bytes)" ] && [ "$(jf populated_bytes)" -le $CAP_BYTES ] && cap="populated within the cap"
    result "max-resident: exit $st, $msg, $cap"
}

# first_touch_cases: memtest random lazy 4K / 64K / 2M and populated, with the C baseline
# interleaved (the first round of the measurement table), and where the host side of a fault
# goes under real nested paging. Both architectures' suites.
first_touch_cases() {
    baseline baseline-lazy lazy
    for fa in 4K 64K 2M; do
        axrun memtest-random-lazy-$fa run /guests/memtest.bin --memory $MEM --order random --fault-around $fa \
            --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
        measure "axvm lazy, $fa fault-around"
        # Where the host side of a fault goes under real nested paging.
        lib=$(jf fault_library_ns_total); res=$(jf fault_resolve_ns_total)
        [ -n "$lib" ] && [ -n "$res" ] && [ $((lib + res)) -gt 0 ] &&
            echo "fault split, $fa: handlePageFault (with the lock) $((lib * 100 / (lib + res)))%, fallocate + UFFDIO_CONTINUE + wake $((res * 100 / (lib + res)))%, $(( (lib + res) / $(jf faults) / 1000 )) us per fault"
    done
    baseline baseline-populated populated
    axrun memtest-random-populated run /guests/memtest.bin --memory $MEM --order random --populate \
        --timeout 300 --stats-json /tmp/s.json
    result "$(memtest_line)"
    measure "axvm populated"
}

suite() {
    if [ "$ARCH" = aarch64 ]; then
        suite_aarch64
        return
    fi
    if [ "$ARCH" = riscv64 ]; then   # riscv64: its own section (suite_riscv64)
        suite_riscv64
        return
    fi
    local t_suite
    t_suite=$(up)
    : > /tmp/table; : > /tmp/measure
    echo "rig: suite, memtest RAM $MEM (test region above 2 MiB), seed 1"

    axrun check check
    local npt
    npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null || echo absent)
    result "check: exit $st, kvm_amd npt $npt, $(grep '^host CPU:' /tmp/out)"
    # axvm check is to name the KVM implementation (kvm_amd here, kvm_pvm on the host).
    if grep -q 'kvm_amd' /tmp/out; then
        echo "check-flavour: axvm check names kvm_amd"
    else
        echo "check-flavour: skipped (axvm check names no KVM implementation yet)"
    fi

    axrun hello run /guests/hello.bin --stats-json /tmp/s.json
    result "hello: exit $st, $(jf exit)"

    # Fault-around: one fault per window of the test region; random order as in
    # bench-faults.sh, with the C baseline interleaved so the measurement table is one run.
    first_touch_cases
    # Other orders: the same checksum as the populated run (it depends on the seed only).
    for order in sequential strided; do
        axrun memtest-$order-lazy-4K run /guests/memtest.bin --memory $MEM --order $order \
            --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
    done

    overlap_case

    axrun retouch run /guests/retouch.bin --memory $MEM --timeout 300 --stats-json /tmp/s.json
    result "$(memtest_line)"
    axrun romwrite run /guests/romwrite.bin --stats-json /tmp/s.json
    result "romwrite: exit $st, $(exit_msg)"
    axrun outside run /guests/outside.bin --stats-json /tmp/s.json
    result "outside: exit $st, $(exit_msg)"
    axrun triple run /guests/triple.bin --stats-json /tmp/s.json
    result "triple: exit $st, $(exit_msg)"
    axrun spin run /guests/spin.bin --timeout 2 --stats-json /tmp/s.json
    result "spin: exit $st, $(exit_msg)"

    max_resident_case
    kut_cases

    # Kernel-mode memtest (guest CPL 0 is not emulated here, unlike on kvm_pvm).
    if [ -f /guests/memtest-kernel.bin ]; then
        axrun memtest-kernel run /guests/memtest-kernel.bin --memory $MEM --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
    else
        echo "memtest-kernel: skipped (guests/build/memtest-kernel.bin absent)"
    fi

    # Linux on axvm: lazy 4K, populated, lazy 64K to the init marker and back out, the bad
    # inputs, and one round of the comparison with QEMU microvm (`scripts/kvm-rig.sh linux`
    # runs more rounds).
    if [ -f /linux/vmlinuz ]; then
        linux_cases
        linux_bad_input
        linux_peer 1
    else
        echo "linux: skipped (no /linux/vmlinuz in the initramfs)"
    fi

    finish_suite "$t_suite"
}

# kvm-unit-tests (scripts/kvm-unit-tests.sh; in the initramfs at /kut when kvm-rig.sh build
# had AXVM_KUT): the entries CI runs, each a case "kut-NAME: RESULT": every entry that passes
# in the rig on axvm and on QEMU (docs/kvm-unit-tests.md; 1-5 s each). Time limits are the suite's times KUT_SCALE: the rig's CPU is emulated.
KUT_CI_X86="smptest smptest3 ioapic idt_test eventinj realmode syscall hypercall xsave umip pcid-enabled pcid-disabled pcid-asymmetric tsc_adjust rmap_chain memory sieve setjmp lam vmexit_cpuid vmexit_vmcall vmexit_mov_from_cr8 vmexit_mov_to_cr8 vmexit_ipi vmexit_ipi_halt vmexit_ple_round_robin vmexit_tscdeadline vmexit_tscdeadline_immed vmexit_cr0_wp vmexit_cr4_pge"
KUT_CI_ARM="selftest-setup selftest-vectors-kernel selftest-vectors-user selftest-smp timer gicv3-active its-introspection pmu-cycle-counter pmu-event-counter-config pmu-sw-incr cache debug-bp debug-wp debug-sstep"
KUT_CI_RISCV="selftest sbi"
KUT_SCALE=3
kut_cases() {
    local list=$KUT_CI_X86 e r t0
    [ "$ARCH" = aarch64 ] && list=$KUT_CI_ARM
    [ "$ARCH" = riscv64 ] && list=$KUT_CI_RISCV
    for e in $list; do
        name=kut-$e
        if [ ! -f /kut/tests/unittests.cfg ]; then
            echo "$name: skipped (no kvm-unit-tests in the initramfs: AXVM_KUT unset when it was built)"
            continue
        fi
        rig_case "$name" $((KUT_SCALE * 90))
        rm -f /tmp/s.json
        t0=$(up)
        r=$(AXVM=/axvm $PIN /kut-run.sh -s $KUT_SCALE -o /tmp/kut /kut/tests "$e" | awk -v e="$e" '$3 == e { print $4 }')
        dt=$(since "$t0")
        st=0; [ "$r" = PASS ] || st=1
        [ "$r" = PASS ] || tr -d '\r' < "/tmp/kut/$e.axvm.log" | tail -15 | sed "s/^/[$name] /"
        # A failed entry: the suite's count and where its failed checks are (their first
        # three name parts), which a known failure of the rig's KVM is expected by.
        [ "$r" = FAIL ] && r="FAIL: $(tr -d '\r' < "/tmp/kut/$e.axvm.log" | sed -n 's/^SUMMARY: //p' | tail -1), in $(tr -d '\r' < "/tmp/kut/$e.axvm.log" \
            | sed -n 's/^FAIL: \([^:]*:[^:]*:[^:]*\):.*/\1/p' | sort -u | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
        result "$name: ${r:-no result}"
    done
}

# kut_table [NAME...]: the suite's default entries (or NAME...) on axvm and on QEMU (-cpu host,
# the same limits), one after the other, side by side (scripts/kvm-rig.sh kut).
kut_table() {
    local e t names="$*"
    [ -f /kut/tests/unittests.cfg ] || { echo "rig: no kvm-unit-tests in the initramfs (build the rig with AXVM_KUT)"; return; }
    [ -n "$names" ] || names=$(/kut-run.sh -l /kut/tests)
    : > /tmp/kut-results.axvm; : > /tmp/kut-results.qemu
    for e in $names; do
        for t in axvm qemu; do
            rig_case "kut-$t-$e" $((KUT_SCALE * 300))
            AXVM=/axvm $PIN /kut-run.sh -t $t -s $KUT_SCALE -o /tmp/kut /kut/tests "$e" | grep "^kut $t " | grep -v "^kut $t summary:" | tee -a /tmp/kut-results.$t
        done
        # Where the two disagree, what each printed last (the reason, for the docs).
        if [ "$(tail -1 /tmp/kut-results.axvm | cut -d' ' -f4)" != "$(tail -1 /tmp/kut-results.qemu | cut -d' ' -f4)" ]; then
            for t in axvm qemu; do tr -d '\r' < "/tmp/kut/$e.$t.log" | grep -v '^PASS' | tail -6 | sed "s/^/[kut-log $e $t] /"; done
        fi
        # A failed entry's failed checks (an entry runs many) and the suite's count.
        for t in axvm qemu; do
            [ "$(tail -1 /tmp/kut-results.$t | cut -d' ' -f4)" = FAIL ] || continue
            tr -d '\r' < "/tmp/kut/$e.$t.log" | grep '^FAIL\|^SUMMARY' | head -12 | sed "s/^/[kut-fail $e $t] /"
        done
    done
    echo "kvm-unit-tests, $(uname -m), rig kernel $(uname -r), time limits x$KUT_SCALE"
    echo "| entry | axvm | QEMU |"
    echo "|---|---|---|"
    awk 'FNR == NR { a[$3] = $4; order[++n] = $3; next } { q[$3] = $4 }
         END { for (i = 1; i <= n; i++) printf "| %s | %s | %s |\n", order[i], a[order[i]], q[order[i]] }' \
        /tmp/kut-results.axvm /tmp/kut-results.qemu
    for t in axvm qemu; do
        awk -v t="$t" '{ n++; if ($4 == "PASS") p++; else if ($4 == "SKIP") s++; else f++ }
            END { printf "%s: %d passed, %d failed, %d skipped of %d\n", t, p, f, s, n }' /tmp/kut-results.$t
    done
}

# finish_suite T_SUITE: rounds 2..ROUNDS of the first-touch measurement, then the results
# table and the measurement table; T_SUITE: the uptime the suite started at.
finish_suite() {
    local t_suite=$1
    echo "rig: cases took $(since "$t_suite") s"
    local round=2 t_measure
    t_measure=$(up)
    while [ $round -le $ROUNDS ]; do
        echo "rig: measurement round $round of $ROUNDS"
        measure_round
        round=$((round + 1))
    done
    echo "rig: measurement rounds 2..$ROUNDS took $(since "$t_measure") s"
    echo
    echo "Results (faults: faults that mapped memory, whole run; minor: faults on pages already"
    echo "populated; p50/p99: fault service time over both kinds; time: axvm process wall time)"
    echo "| case                       | ok?  | exit | faults | minor | p50 µs    | p99 µs    | time s |"
    echo "|----------------------------|------|------|--------|-------|-----------|-----------|--------|"
    cat /tmp/table
    echo
    echo "First touch, memtest $MEM random order, median of $ROUNDS interleaved runs: guest run time per"
    echo "4 KiB page of the test region; faults in the test region (C baseline: every missing page,"
    echo "the stack page too); fault service p50/p99 (the C baseline times no single fault)"
    echo "| configuration                  | ns/page | min-max ns/page | vs C lazy | vs axvm populated | faults | p50 µs | p99 µs |"
    echo "|--------------------------------|---------|-----------------|-----------|-------------------|--------|--------|--------|"
    awk -F'|' "$AWK_MEDIAN"'
        function range(list,   v, n) { n = sort(list, v); return v[1] "-" v[n] }
        { if (!($1 in ns)) order[++k] = $1
          ns[$1] = ns[$1] " " $2; f[$1] = $3; a[$1] = a[$1] " " $4; b[$1] = b[$1] " " $5 }
        END { base = median(ns["C baseline, lazy"]) + 0; pop = median(ns["axvm populated"]) + 0
              for (i = 1; i <= k; i++) { l = order[i]; m = median(ns[l])
                  printf "| %-30s | %7d | %15s | %8.2fx | %16.2fx | %6s | %6s | %6s |\n", l, m, range(ns[l]),
                         base ? m / base : 0, pop ? m / pop : 0, f[l], median(a[l]), median(b[l]) } }' /tmp/measure
    echo
    echo "rig: suite took $(since "$t_suite") s"
    echo "rig: $npass passed, $nfail failed"
}

# have_guest GUEST CASE...: whether /guests/GUEST.bin is there; if not, says each CASE is
# skipped (scripts/kvm-rig.sh compare aarch64 fails on these unless AXVM_RIG_PARTIAL=1).
have_guest() {
    local g=$1 c
    [ -f /guests/$g.bin ] && return 0
    shift
    for c in "$@"; do echo "$c: skipped (guest /guests/$g.bin absent)"; done
    return 1
}

# The cases the arm64 and riscv64 suites run with the memtest guest (skipped together when
# it was not built).
MEMTEST_CASES="baseline-lazy baseline-populated memtest-random-lazy-4K memtest-random-lazy-64K memtest-random-lazy-2M
    memtest-random-populated memtest-sequential-lazy-4K memtest-sequential-lazy-64K memtest-sequential-lazy-2M
    memtest-overlap-2vcpus max-resident memtest-snapshot memtest-restore-lazy memtest-restore-populated"

# hello_case: the hello guest (arm64, riscv64; skipped if it was not built).
hello_case() {
    if have_guest hello hello; then
        axrun hello run /guests/hello.bin --stats-json /tmp/s.json
        result "hello: exit $st, $(jf exit)"
    fi
}

# sequential_cases: memtest in page order, lazily with fault-around 4K, 64K and 2M.
sequential_cases() {
    local fa
    for fa in 4K 64K 2M; do
        axrun memtest-sequential-lazy-$fa run /guests/memtest.bin --memory $MEM --order sequential --fault-around $fa \
            --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
    done
}

# guest_end_cases EXIT_MSG: retouch, then the guests whose run ends on what they do (romwrite,
# outside, abort, spin), each described by EXIT_MSG (arm64: exit_msg; riscv64:
# exit_msg_riscv64). A guest that was not built is skipped (have_guest).
guest_end_cases() {
    local msg=$1 g
    if have_guest retouch retouch; then
        axrun retouch run /guests/retouch.bin --memory $MEM --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
    fi
    for g in romwrite outside abort; do
        if have_guest $g $g; then
            axrun $g run /guests/$g.bin --stats-json /tmp/s.json
            result "$g: exit $st, $($msg)"
        fi
    done
    if have_guest spin spin; then
        axrun spin run /guests/spin.bin --timeout 2 --stats-json /tmp/s.json
        result "spin: exit $st, $($msg)"
    fi
}

# The AArch64 suite: the x86 cases with the AArch64 guests (guests/aarch64, same names and
# the same axvm command line), RAM at 0x4000_0000 (checksums over [RAM + 2 MiB, RAM + MEM)),
# then the same two tables.
suite_aarch64() {
    local t_suite fa order
    t_suite=$(up)
    : > /tmp/table; : > /tmp/measure
    echo "rig: suite (arm64, -cpu $CPU), memtest RAM $MEM (test region above RAM + 2 MiB), seed 1"

    # The kernel's KVM: VHE (-cpu max: the kernel runs at EL2) or nVHE (cortex-a57: "Hyp
    # mode", KVM's hyp code at EL2), the IPA size limit (stage 2 input bits).
    name=kernel-kvm; st=-; dt=-; rm -f /tmp/s.json
    local mode ipa
    mode=$(dmesg | sed -n 's/.*kvm \[[0-9]*\]: \([A-Za-z]*\) mode initialized successfully.*/\1/p' | head -1)
    ipa=$(dmesg | sed -n 's/.*kvm \[[0-9]*\]: IPA Size Limit: \([0-9]*\) bits.*/\1/p' | head -1)
    result "kernel-kvm: ${mode:-no} mode initialized, IPA Size Limit ${ipa:-?} bits"

    # axvm check's flavour line and the line after it (IPA size, preferred target).
    axrun check check
    result "check: exit $st, $(grep '^KVM flavour:' /tmp/out), $(grep -m1 '^ *IPA size:' /tmp/out | sed 's/^ *//')"

    hello_case

    # Fault-around 4K/64K/2M, random order with the C baseline interleaved (the measurement
    # table is one run), then sequential.
    if have_guest memtest $MEMTEST_CASES; then
        first_touch_cases
        sequential_cases
        overlap_case
        max_resident_case
        memtest_snapshot_cases
    fi

    guest_end_cases exit_msg

    kut_cases

    if [ -f /linux/vmlinuz ]; then
        : > /tmp/peer
        linux_cases_aarch64
        linux_bad_input
        # The QEMU peer once, beside the lazy and populated boots above (-cpu max only).
        [ "$CPU" = max ] && linux_peer 1 qemu
    else
        echo "linux: skipped (no /linux/vmlinuz in the initramfs)"
    fi

    if [ -f /guests/memtest.bin ]; then
        finish_suite "$t_suite"
    else
        echo "rig: no memtest guest: no first-touch measurement"
        echo "| case                       | ok?  | exit | faults | minor | p50 µs    | p99 µs    | time s |"
        echo "|----------------------------|------|------|--------|-------|-----------|-----------|--------|"
        cat /tmp/table
        echo "rig: suite took $(since "$t_suite") s"
        echo "rig: $npass passed, $nfail failed"
    fi
}

# --- riscv64 (scripts/kvm-rig.sh fetch|build|test|shell riscv64) --------------------------
# RISC-V KVM on the H extension: Debian's riscv64 kernel under qemu-system-riscv64 -M virt
# -cpu rv64 (TCG). KVM is a module here (kvm.ko, no dependencies), loaded by setup_riscv64;
# no AIA, so KVM has no in-kernel irqchip (the guests need none). The guests are
# guests/riscv64 (same names, same axvm command lines as the other suites), RAM at
# 0x8000_0000: the memtest checksums are over [RAM + 2 MiB, RAM + 64 MiB) at those addresses.

# setup_riscv64: loads kvm.ko (once: `/init suite` from the shell calls it again) and says
# what the kernel's KVM found; with more than one CPU, axvm and the baseline run pinned to
# CPU 0 (PIN), as on arm64, except in the 2-vCPU cases (riscv64_smp).
setup_riscv64() {
    local t0
    echo "rig: riscv64, $(grep -c ^processor /proc/cpuinfo) CPU(s), isa $(sed -n 's/^isa[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    if [ ! -d /sys/module/kvm ]; then
        t0=$(up)
        insmod /modules/kvm.ko || echo "rig: insmod kvm.ko failed"
        echo "rig: kvm.ko loaded in $(since "$t0") s"
    fi
    dmesg | grep -i -e 'kvm' | sed 's/^/[dmesg] /'
    if [ "$(grep -c ^processor /proc/cpuinfo)" -gt 1 ] && ! grep -qw rig_nopin /proc/cmdline; then
        PIN="taskset 1"
        echo "rig: axvm and the baseline run pinned to CPU 0 ($PIN), the 2-vCPU cases on both CPUs"
    fi
}

# exit_msg_riscv64: the exit description without register values (" (pc 0x...)",
# " at pc 0x...", the same with sepc).
exit_msg_riscv64() {
    jf exit | sed 's/ (\(pc\|sepc\|rip\) 0x[0-9a-f]*)//; s/ at \(pc\|sepc\|rip\) 0x[0-9a-f]*//'
}

# riscv64_smp NAME MODE: memtest on 2 vCPUs with 2 fault threads in MODE (split: each vCPU
# its share of the pages, the checksum their sum; overlap: both touch every page), unpinned.
riscv64_smp() {
    local pin=$PIN
    PIN=
    axrun "$1" run /guests/memtest.bin --memory $MEM --order random --vcpus 2 --fault-threads 2 \
        --memtest-mode "$2" --timeout 300 --stats-json /tmp/s.json
    PIN=$pin
    result "$(memtest_line)"
}

# riscv64_first_touch_ratio: after finish_suite, axvm lazy 4K against the C baseline (lazy),
# both from this boot's measurement (/tmp/measure: the first round in first_touch_cases, the
# others in finish_suite), as the ratio of their median ns/page. Its "first-touch:" line is in
# the expectations (checked by kvm-rig.sh, not in the table above).
riscv64_first_touch_ratio() {
    local r
    r=$(awk -F'|' "$AWK_MEDIAN"'
        { ns[$1] = ns[$1] " " $2; n[$1]++ }
        END { a = median(ns["axvm lazy, 4K fault-around"]) + 0; c = median(ns["C baseline, lazy"]) + 0
              if (a > 0 && c > 0) printf "%.2fx (median ns/page: axvm %d, C baseline %d; %d and %d runs)", a / c, a, c, n["axvm lazy, 4K fault-around"], n["C baseline, lazy"] }' /tmp/measure)
    if [ -n "$r" ]; then
        echo "rig: first touch, memtest $MEM random, axvm lazy 4K vs the C baseline lazy: $r"
        echo "first-touch: axvm lazy 4K and the C baseline measured in the same boot"
    else
        echo "first-touch: no measurement (axvm lazy 4K or the C baseline did not run)"
    fi
}

# The peer (linux_peer): QEMU's own virt machine with KVM, Debian trixie's riscv64 QEMU
# (scripts/qemu-riscv64-sysroot.sh), booting the same kernel, initramfs, command line (its
# console is the same ns16550a, ttyS0) and RAM on one hart. With KVM QEMU loads no firmware
# (-bios none: KVM serves SBI); no AIA (aia=none, the default): like axvm, QEMU emulates the
# PLIC itself and raises the harts' external interrupt with KVM_INTERRUPT.
if [ "$ARCH" = riscv64 ]; then
    PEER_QEMU=/usr/bin/qemu-system-riscv64 PEER_NAME="QEMU virt" PEER_TAG=qemu-virt
    peer_qemu() {
        exec timeout -s KILL 300 $PEER_QEMU -enable-kvm -M virt -cpu host -bios none -m $LINUX_MEM -nographic -no-reboot -nic none "$@" \
            -kernel /linux/vmlinuz -initrd /linux/initramfs.cpio.gz -append "$LINUX_CMDLINE${PEER_APPEND:-}"
    }
fi

# linux_cases_riscv64: Linux on axvm (the rig's own kernel, the guest initramfs): lazily with
# 4 KiB faults and a reboot at the end, with 64 KiB fault-around on 2 harts (the second
# started through SBI HSM), populated and powered off (SBI system reset). The lazy 4K and
# populated boots are also rows of linux_peer's table (peer_row).
linux_cases_riscv64() {
    echo "rig: Linux on axvm: $(ls -l /linux/vmlinuz | awk '{print $5}')-byte kernel, $LINUX_MEM, cmdline \"$LINUX_CMDLINE\""
    linux_axvm linux-lazy --fault-around 4K
    result "$(linux_line)"
    peer_row "axvm lazy 4K"
    local lazy_boot=$boot lazy_pop
    lazy_pop=$(jf populated_bytes)
    linux_axvm linux-lazy-64K-2vcpus --fault-around 64K --vcpus 2
    result "$(linux_line)"
    name=linux-2vcpus-seen
    result "linux-2vcpus-seen: $(tr -d '\r' < /tmp/linux-lazy-64K-2vcpus.out | grep -c -e '^axvm-linux: 2 CPUs online' -e '^axvm-linux: ran on CPU [01]$') of 3 lines"
    local boot64=$boot
    linux_axvm linux-populated-poweroff --populate --cmdline "$LINUX_CMDLINE axvm.end=poweroff"
    result "$(linux_line)"
    peer_row "axvm populated"
    echo "rig: riscv64 Linux booted with $LINUX_MEM of lazy RAM and touched $(mib "${lazy_pop:-0}") MiB; boot to init $lazy_boot s lazy 4K, $boot64 s lazy 64K on 2 harts, $boot s populated"
}

# The RISC-V suite: the arm64 suite's guest cases with the RISC-V guests, Linux on axvm and
# once on QEMU, kvm-unit-tests' selftest and sbi, then the two tables and the first-touch ratio.
suite_riscv64() {
    local t_suite fa order mode gstage vmid
    t_suite=$(up)
    : > /tmp/table; : > /tmp/measure
    echo "rig: suite (riscv64, $(grep -c ^processor /proc/cpuinfo) CPU(s)), memtest RAM $MEM (test region above RAM + 2 MiB), seed 1"

    # The kernel's KVM (kvm.ko's messages at insmod): the H extension, the G-stage format.
    name=kernel-kvm; st=-; dt=-; rm -f /tmp/s.json
    mode=$(dmesg | grep -q 'kvm \[[0-9]*\]: hypervisor extension available' && echo "hypervisor extension available" || echo "no hypervisor extension")
    gstage=$(dmesg | sed -n 's/.*kvm \[[0-9]*\]: using \([A-Za-z0-9]*\) G-stage page table format.*/\1/p' | head -1)
    vmid=$(dmesg | sed -n 's/.*kvm \[[0-9]*\]: VMID \([0-9]*\) bits available.*/\1/p' | head -1)
    result "kernel-kvm: $mode, ${gstage:-no} G-stage, VMID ${vmid:-?} bits"

    # axvm check: its "KVM flavour:" line and the "G-stage:" line after it (the whole output
    # is in the log as "[check] ...").
    axrun check check
    result "check: exit $st, $(grep '^KVM flavour:' /tmp/out || echo 'no KVM flavour line'), $(grep -m1 '^ *G-stage:' /tmp/out | sed 's/^ *//' || true)"

    hello_case

    # Fault-around 4K/64K/2M, random order with the C baseline interleaved (the measurement
    # table is one run), then the other orders, 2 vCPUs in both modes, the residency cap.
    if have_guest memtest $MEMTEST_CASES memtest-strided-lazy-4K memtest-split-2vcpus first-touch; then
        first_touch_cases
        sequential_cases
        axrun memtest-strided-lazy-4K run /guests/memtest.bin --memory $MEM --order strided \
            --timeout 300 --stats-json /tmp/s.json
        result "$(memtest_line)"
        riscv64_smp memtest-split-2vcpus split
        riscv64_smp memtest-overlap-2vcpus overlap
        max_resident_case
        memtest_snapshot_cases
    fi

    guest_end_cases exit_msg_riscv64

    # Linux on axvm (linux_cases_riscv64), then QEMU virt with KVM once beside its lazy 4K
    # and populated boots (`scripts/kvm-rig.sh linux riscv64` runs more rounds).
    if [ -f /linux/vmlinuz ]; then
        : > /tmp/peer
        linux_cases_riscv64
        linux_peer 1 qemu
    else
        echo "linux: skipped (no /linux/vmlinuz in the initramfs)"
    fi

    kut_cases

    if [ -f /guests/memtest.bin ]; then
        finish_suite "$t_suite"
        riscv64_first_touch_ratio
    else
        echo "rig: no memtest guest: no first-touch measurement"
        echo "| case                       | ok?  | exit | faults | minor | p50 µs    | p99 µs    | time s |"
        echo "|----------------------------|------|------|--------|-------|-----------|-----------|--------|"
        cat /tmp/table
        echo "rig: suite took $(since "$t_suite") s"
        echo "rig: $npass passed, $nfail failed"
    fi
}

if [ "${1:-}" = suite ]; then
    [ "$ARCH" = aarch64 ] && setup_aarch64 > /dev/null
    [ "$ARCH" = riscv64 ] && setup_riscv64 > /dev/null   # riscv64
    suite
    exit
fi
setup
case " $(cat /proc/cmdline) " in
    *" rig=linux "*)
        # scripts/kvm-rig.sh linux x86_64|aarch64|riscv64: the Linux cases and the QEMU comparison only.
        : > /tmp/table
        if [ "$ARCH" = aarch64 ]; then
            setup_aarch64
            : > /tmp/peer
            linux_cases_aarch64
            linux_bad_input
            linux_peer "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)"
            linux_restore_rounds 3
        elif [ "$ARCH" = riscv64 ]; then   # riscv64: ROUNDS rounds of each, the suite's boots not in the table
            linux_cases_riscv64
            : > /tmp/peer
            linux_peer "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)"
        else
            linux_cases
            linux_bad_input
            linux_peer "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)" "lazy lazy64 lazy2m populate qemu"
            exit_profile
            linux_restore_rounds 5
            linux_clones 16 "$(tr -d '\r' < /tmp/linux-snapshot.out | sed -n 's/^axvm-snap: before //p')" "$(sed -n 's/^  "snapshot_pages": \([0-9]*\),/\1/p' /tmp/linux-snapshot.json)"
        fi
        cat /tmp/table
        echo "rig: $npass passed, $nfail failed"
        echo "RIG DONE"
        ;;
    *" rig=kut "*)
        # scripts/kvm-rig.sh kut x86_64|aarch64|riscv64: the whole suite on axvm and on QEMU.
        [ "$ARCH" = aarch64 ] && setup_aarch64
        KUT_SCALE=$(sed -n 's/.*rig_scale=\([0-9]*\).*/\1/p' /proc/cmdline)
        kut_table $(sed -n 's/.*rig_args=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
        echo "RIG DONE"
        ;;
    *" rig=sandbox "*)
        # scripts/kvm-rig.sh sandbox x86_64|aarch64: Linux boots with and without the sandbox.
        [ "$ARCH" = aarch64 ] && setup_aarch64
        PEER_QEMU=/nonexistent linux_peer "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)" "lazy64 lazy64nosb"
        echo "RIG DONE"
        ;;
    *" rig=disk "*)
        # scripts/kvm-rig.sh disk x86_64|aarch64: the disk benchmark only.
        [ "$ARCH" = aarch64 ] && setup_aarch64
        disk_bench "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)"
        echo "RIG DONE"
        ;;
    *" rig=balloon "*)
        # scripts/kvm-rig.sh balloon x86_64|aarch64: free page reporting against QEMU.
        [ "$ARCH" = aarch64 ] && setup_aarch64
        balloon_compare
        echo "RIG DONE"
        ;;
    *" rig=soak "*)
        # scripts/kvm-rig.sh soak x86_64 N [AXVM BOOT ARGS]: N Linux boots in a row.
        linux_soak "$(sed -n 's/.*rig_rounds=\([0-9]*\).*/\1/p' /proc/cmdline)" \
            $(sed -n 's/.*rig_args=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
        echo "RIG DONE"
        ;;
    *" rig=shell "*)
        echo "rig: shell; /init suite runs the suite; poweroff -f leaves"
        setsid cttyhack sh
        ;;
    *)
        suite
        echo "RIG DONE"
        ;;
esac
poweroff -f
