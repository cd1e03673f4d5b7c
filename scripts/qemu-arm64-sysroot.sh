#!/usr/bin/env bash
# Debian's own arm64 QEMU (qemu-system-aarch64 of qemu-system-arm:arm64, Debian 12, 7.2) as a
# minimal directory tree, to be merged into the arm64 rig's root filesystem (busybox only), so
# that /usr/bin/qemu-system-aarch64 runs there and boots a guest with
# `-M virt -enable-kvm -cpu host -nographic -kernel ... -initrd ... -nic none -no-reboot`
# beside axvm.
#   scripts/qemu-arm64-sysroot.sh DEST
# DEST gets usr/bin/qemu-system-aarch64, the shared libraries its ELF DT_NEEDED entries name
# (recursively) in lib/aarch64-linux-gnu and usr/lib/aarch64-linux-gnu, and the dynamic
# loader lib/ld-linux-aarch64.so.1 (a symlink, as in Debian); no docs, man pages, ROMs,
# firmware or QEMU modules: -M virt with -kernel needs no data file. DEST may exist (the
# files are added; it can be the rig's root itself).
# The .debs: qemu-system-arm:arm64 and the closure of its Depends and Pre-Depends (the first
# of each group of alternatives, a virtual package's first provider; arm64, or all), fetched
# with apt-get download into $AXVM_RIG_CACHE/arm64/qemu-debs (default ~/.cache/axvm-rig),
# again only when the closure (names and candidate versions) differs from that directory's
# stamp; unpacked (dpkg-deb -x) once per closure into $AXVM_RIG_CACHE/arm64/qemu-staging.
# Check (the arm64 binary does not run here natively): qemu-aarch64-static -L DEST runs
# `qemu-system-aarch64 --version`, then starts the rig's arm64 kernel under TCG for up to
# AXVM_QEMU_CHECK_SECONDS (60) seconds and shows its first console lines; a file QEMU opens
# that DEST lacks (qemu-user would take the host's) is reported. AXVM_QEMU_CHECK=0 skips the
# boot. Needs apt (arm64 added to dpkg: dpkg --add-architecture arm64), llvm-readelf (next to
# swiftc, or on PATH) or binutils' readelf, qemu-user-static.
# The same for riscv64: scripts/qemu-riscv64-sysroot.sh sets the qs_* parameters below and
# sources this file (run as a script, it is arm64's).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${AXVM_RIG_CACHE:-$HOME/.cache/axvm-rig}

# The parameters: run as a script, arm64's; sourced (scripts/qemu-riscv64-sysroot.sh), the
# caller's. qs_arch: the Debian architecture (and the cache subdirectory); qs_pkg: the package;
# qs_binary: QEMU in it; qs_triplet: the multiarch directory; qs_elf: what readelf -h says the
# machine is; qs_user: the qemu-user that runs the binary here; qs_apt_opts: options for
# apt-get and apt-cache (none: the machine's apt, which must know qs_arch as a foreign
# architecture); qs_fetch: the command that caches the rig's kernel; qs_check_args: sets
# check_args, the boot check's machine, CPU and firmware options, and check_console, the
# kernel's console (called after the unpack).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    qs_arch=arm64
    qs_pkg=qemu-system-arm
    qs_binary=usr/bin/qemu-system-aarch64
    qs_triplet=aarch64-linux-gnu
    qs_elf=AArch64
    qs_user=qemu-aarch64-static
    qs_apt_opts=()
    qs_fetch="scripts/kvm-rig.sh fetch aarch64"
    qs_check_args() { check_args=(-M virt -cpu cortex-a57); check_console=ttyAMA0; }
fi
debs=$cache/$qs_arch/qemu-debs
staging=$cache/$qs_arch/qemu-staging
root_pkg=$qs_pkg
binary=$qs_binary
me=qemu-$qs_arch-sysroot

die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$me: $*"; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DEST"
dest=$1
command -v apt-cache >/dev/null && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-cache, apt-get and dpkg-deb are needed (a Debian host)"
if [ ${#qs_apt_opts[@]} -eq 0 ]; then
    dpkg --print-foreign-architectures | grep -qx "$qs_arch" \
        || die "dpkg does not know $qs_arch: run dpkg --add-architecture $qs_arch && apt-get update"
fi
apt_cache() { apt-cache "${qs_apt_opts[@]}" "$@"; }
apt_get() { apt-get "${qs_apt_opts[@]}" "$@"; }

# readelf: llvm-readelf next to swiftc, else on PATH, else binutils' readelf (all read the
# foreign ELF files of this x86_64 host).
readelf=""
if command -v swiftc >/dev/null && [ -x "$(dirname "$(command -v swiftc)")/llvm-readelf" ]; then
    readelf=$(dirname "$(command -v swiftc)")/llvm-readelf
elif command -v llvm-readelf >/dev/null; then readelf=$(command -v llvm-readelf)
elif command -v readelf >/dev/null; then readelf=$(command -v readelf)
else die "no llvm-readelf (next to swiftc or on PATH) and no readelf (binutils)"; fi

# --- the closure ---------------------------------------------------------------------------

# closure: "NAME[:ARCH] VERSION" lines, sorted: $qs_pkg:$qs_arch and everything its
# Depends and Pre-Depends need, breadth first. Of a group of alternatives (A | B) the first
# is taken, of a virtual package (<V>) its first provider; each name is pinned to ARCH, or
# left bare if it is Architecture: all (apt-cache show decides, one call per level).
closure() {
    local flags=(--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances)
    local -A seen=()
    local frontier=() new=("$qs_pkg") deps d p a v
    local out=""
    while [ ${#new[@]} -gt 0 ]; do
        frontier=()
        while read -r p a v; do
            case $a in "$qs_arch") p=$p:$qs_arch ;; all) ;; *) continue ;; esac
            [ -z "${seen[$p]:-}" ] || continue
            seen[$p]=1
            frontier+=("$p")
            out+="$p $v"$'\n'
        done < <({ apt_cache show --no-all-versions "${new[@]/%/:$qs_arch}"; apt_cache show --no-all-versions "${new[@]}"; } 2>/dev/null \
                 | awk '/^Package: /{p=$2} /^Architecture: /{a=$2} /^Version: /{v=$2} /^$/{if (p != "") print p, a, v; p=""}
                        END{if (p != "") print p, a, v}' | sort -u)
        [ ${#frontier[@]} -gt 0 ] || break
        # apt-cache depends: "  Depends: X" ("|Depends:" when the next line is an alternative
        # of the same group); "<X>" is virtual, its providers follow on lines indented by 4.
        mapfile -t deps < <(apt_cache depends "${flags[@]}" "${frontier[@]}" | awk '
            function flush() { if (cand != "") print cand; cand = ""; pending = 0 }
            /^[^ ]/ { flush(); ingroup = 0; next }
            /^ [ |](Pre)?Depends: / {
                alt = ($0 ~ /^ \|/); name = $2
                if (!ingroup) { flush(); ingroup = 1 }
                if (cand == "") { if (name ~ /^</) pending = 1; else cand = name }
                if (!alt) ingroup = 0
                next
            }
            /^    / { if (pending && cand == "") { cand = $1; pending = 0 } next }
            END { flush() }' | sed 's/:.*//' | sort -u)
        new=()
        for d in "${deps[@]}"; do
            [ -n "${seen[$d:$qs_arch]:-}${seen[$d]:-}" ] || new+=("$d")
        done
    done
    printf '%s' "$out" | sort
}

say "computing the Depends closure of $root_pkg:$qs_arch (apt-cache)"
list=$(closure)
if ! grep -q "^$root_pkg:$qs_arch " <<< "$list"; then
    say "apt knows no $root_pkg:$qs_arch: apt-get update"
    apt_get update -qq || die "apt-get update failed"
    list=$(closure)
    grep -q "^$root_pkg:$qs_arch " <<< "$list" || die "apt knows no $root_pkg:$qs_arch even after apt-get update (is $qs_arch in the sources?)"
fi

# deb_file "NAME[:ARCH] VERSION": the file name apt-get download gives it (epoch ':' as %3a).
deb_file() {
    local name=${1%% *} version=${1#* } arch=all
    case $name in *:"$qs_arch") name=${name%:"$qs_arch"}; arch=$qs_arch ;; esac
    echo "${name}_${version//:/%3a}_$arch.deb"
}

# --- download ------------------------------------------------------------------------------

mkdir -p "$debs"
if [ -f "$debs/stamp" ] && [ "$(cat "$debs/stamp")" = "$list" ]; then
    say "cached: $(wc -l <<< "$list") packages ($debs)"
else
    missing=()
    while read -r line; do
        [ -f "$debs/$(deb_file "$line")" ] || missing+=("${line%% *}=${line#* }")
    done <<< "$list"
    if [ ${#missing[@]} -gt 0 ]; then
        say "apt-get download: ${#missing[@]} of $(wc -l <<< "$list") packages into $debs"
        # apt-get download as root warns that _apt cannot write here; the download works.
        if ! (cd "$debs" && apt_get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed'; exit "${PIPESTATUS[0]}"); then
            say "apt-get download failed: apt-get update, then once more"
            apt_get update -qq || die "apt-get update failed"
            (cd "$debs" && apt_get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed'; exit "${PIPESTATUS[0]}") \
                || die "apt-get download failed for: ${missing[*]}"
        fi
    fi
    # Every package's .deb is there now; older versions go.
    keep=$(while read -r line; do deb_file "$line"; done <<< "$list")
    for f in "$debs"/*.deb; do
        grep -qxF "$(basename "$f")" <<< "$keep" || rm -f "$f"
    done
    while read -r f; do
        [ -f "$debs/$f" ] || die "apt-get download left no $debs/$f"
    done <<< "$keep"
    printf '%s\n' "$list" > "$debs/stamp"
fi

# --- unpack --------------------------------------------------------------------------------

if [ -f "$staging/.stamp" ] && [ "$(cat "$staging/.stamp")" = "$list" ]; then
    say "unpacked: $staging"
else
    say "dpkg-deb -x: $(wc -l <<< "$list") packages into $staging"
    rm -rf "$staging" && mkdir -p "$staging"
    while read -r line; do
        dpkg-deb -x "$debs/$(deb_file "$line")" "$staging" || die "dpkg-deb -x $(deb_file "$line") failed"
    done <<< "$list"
    printf '%s\n' "$list" > "$staging/.stamp"
fi
[ -f "$staging/$binary" ] || die "$root_pkg:$qs_arch has no /$binary"

# --- copy what the binary needs ------------------------------------------------------------

# needed FILE: the sonames of FILE's DT_NEEDED entries.
needed() {
    "$readelf" -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'
}

# interp FILE: FILE's PT_INTERP (the dynamic loader), e.g. /lib/ld-linux-aarch64.so.1.
interp() {
    "$readelf" -l "$1" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p'
}

# lib_path SONAME: where it is in the staging tree (relative), in the multiarch directories
# Debian's ld.so searches without an ld.so.cache.
lib_path() {
    local d
    for d in lib/$qs_triplet usr/lib/$qs_triplet; do
        if [ -e "$staging/$d/$1" ]; then echo "$d/$1"; return; fi
    done
    return 1
}

# The header read whole first: `readelf | grep -q` under pipefail fails when grep's early exit
# kills readelf with SIGPIPE.
header=$("$readelf" -h "$staging/$binary") || die "$readelf -h $staging/$binary failed"
case $header in *"$qs_elf"*) ;; *) die "$staging/$binary is not an $qs_elf ELF file" ;; esac
ldso=$(interp "$staging/$binary")
[ -n "$ldso" ] || die "$binary has no program interpreter (PT_INTERP)"

mkdir -p "$dest"
added=()
# add REL: the staging tree's REL (symlinks followed) as a regular file DEST/REL.
add() {
    mkdir -p "$dest/$(dirname "$1")"
    rm -f "$dest/$1"
    cp -L "$staging/$1" "$dest/$1"
    added+=("$1")
}

add "$binary"
declare -A done_libs=()
queue=("$binary")
while [ ${#queue[@]} -gt 0 ]; do
    file=${queue[0]}
    queue=("${queue[@]:1}")
    for so in $(needed "$staging/$file"); do
        [ -z "${done_libs[$so]:-}" ] || continue
        done_libs[$so]=1
        rel=$(lib_path "$so") || die "$file needs $so, which no package of the closure has in (usr/)lib/$qs_triplet"
        add "$rel"
        queue+=("$rel")
    done
done

# The loader: Debian's /lib/ld-linux-aarch64.so.1 is a symlink into lib/aarch64-linux-gnu
# (trixie's, merged /usr: into usr/lib/TRIPLET).
ldso_rel=${ldso#/}
ldso_target=$(lib_path "$(basename "$ldso")") || die "no $(basename "$ldso") in (usr/)lib/$qs_triplet of libc6:$qs_arch"
[ -n "${done_libs[$(basename "$ldso")]:-}" ] || add "$ldso_target"
if [ "$ldso_rel" != "$ldso_target" ]; then
    mkdir -p "$dest/$(dirname "$ldso_rel")"
    rm -f "$dest/$ldso_rel"
    ln -s "$(realpath -s -m --relative-to="$(dirname "/$ldso_rel")" "/$ldso_target")" "$dest/$ldso_rel"
fi

bytes=$( (cd "$dest" && du -cb "${added[@]}") | tail -1 | cut -f1)
say "$dest: /$binary, $((${#added[@]} - 1)) libraries, /$ldso_rel -> $(readlink "$dest/$ldso_rel")," \
    "$((bytes / 1048576)) MiB added"

# --- check ---------------------------------------------------------------------------------

command -v "$qs_user" >/dev/null || die "no $qs_user (apt-get install qemu-user-static)"
dest_abs=$(realpath "$dest")
version=$("$qs_user" -L "$dest_abs" "$dest_abs/$binary" --version) \
    || die "$qs_user -L $dest $dest/$binary --version failed"
say "$(head -1 <<< "$version")"

if [ "${AXVM_QEMU_CHECK:-1}" != 0 ]; then
    kernel=""
    [ -f "$cache/$qs_arch/kernel-package" ] && kernel=$cache/$qs_arch/$(cat "$cache/$qs_arch/kernel-package")/vmlinuz
    if [ -z "$kernel" ] || [ ! -f "$kernel" ]; then
        say "no $qs_arch kernel cached ($qs_fetch): boot check skipped"
    else
        secs=${AXVM_QEMU_CHECK_SECONDS:-60}
        log=$(mktemp -d)
        qs_check_args
        say "boot check: ${check_args[*]} -accel tcg under $qs_user, ${secs}s at most"
        # qemu-user's -strace logs the guest's system calls (to stderr), the console is stdout.
        rc=0
        timeout "$secs" "$qs_user" -L "$dest_abs" -strace "$dest_abs/$binary" \
            "${check_args[@]}" -m 256M -accel tcg -nographic -nic none -no-reboot \
            -kernel "$kernel" -append "console=$check_console panic=-1" \
            > "$log/console" 2> "$log/strace" < /dev/null || rc=$?
        lines=$(grep -a -c '^\[ *[0-9]*\.[0-9]*\]' "$log/console" || true)
        grep -a '^\[ *[0-9]*\.[0-9]*\]' "$log/console" | head -8 | sed 's/^/  console: /' || true
        # The files opened: "openat(AT_FDCWD,"PATH",...) = N", or "= -1 errno=2 ..." if absent.
        # -L DEST takes the host's file where DEST has none: such a file would be missing in
        # the rig, unless it is a library DEST has in the other multiarch directory (ld.so
        # tries lib/ before usr/lib/). Absent libraries are ld.so's search, not reported.
        opened=$(grep -ao 'open\(at\)\{0,1\}([^"]*"[^"]*",.*) = -\{0,1\}[0-9]*' "$log/strace" \
                 | sed 's/^[^"]*"\([^"]*\)".*) = \(-\{0,1\}[0-9]*\)$/\2 \1/' | sort -u || true)
        from_host=() etc=() absent=()
        while read -r r path; do
            case $path in /*) ;; *) continue ;; esac
            case $path in /proc/*|/sys/*|/dev/*|"$kernel"|"$staging"/*) continue ;; esac
            if [ "$r" -ge 0 ]; then
                [ ! -e "$dest_abs$path" ] || continue
                case $path in
                    */"$qs_triplet"/*.so*)
                        [ -e "$dest_abs/lib/$qs_triplet/${path##*/}" ] || [ -e "$dest_abs/usr/lib/$qs_triplet/${path##*/}" ] \
                            || from_host+=("$path") ;;
                    /etc/*) etc+=("$path") ;;
                    *) from_host+=("$path") ;;
                esac
            else
                case $path in *.so|*.so.*) ;; *) absent+=("$path") ;; esac
            fi
        done <<< "$opened"
        [ ${#etc[@]} -eq 0 ] || say "optional, taken from the host here, absent in the rig: ${etc[*]}"
        [ ${#absent[@]} -eq 0 ] || say "optional, tried and absent: ${absent[*]}"
        [ ${#from_host[@]} -eq 0 ] || say "warning: opened from the host, missing in DEST: ${from_host[*]}"
        errors=$(grep -a "${binary##*/}:" "$log/console" "$log/strace" | sed 's/^[^:]*://' | sort -u | head -5 || true)
        [ -z "$errors" ] || say "QEMU said: $errors"
        if [ "$lines" -gt 0 ] && [ ${#from_host[@]} -eq 0 ]; then
            say "boot check: $lines kernel console lines (QEMU exit status $rc; 124: stopped after ${secs}s)"
            rm -rf "$log"
        elif [ "$lines" -gt 0 ]; then
            die "boot check: DEST lacks files QEMU opened (above); console and strace: $log"
        else
            die "boot check: no kernel console line in ${secs}s (exit $rc); console and strace: $log"
        fi
    fi
fi
say "$(du -sh "$dest" | cut -f1) in $dest ($((bytes / 1048576)) MiB added by this script)"
