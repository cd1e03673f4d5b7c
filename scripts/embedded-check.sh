#!/usr/bin/env bash
# Compiles AxAddrSpace/Sources/AxAddrSpace in Embedded Swift mode for every bare-metal target: the
# library's equivalent of the Rust crate's no_std build. Fails on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFTC=${SWIFTC:-swiftc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for target in aarch64-none-none-elf riscv64-none-none-eabi x86_64-unknown-none-elf; do
    extra=()
    [[ $target == riscv64* ]] && extra=(-Xcc -march=rv64gc -Xcc -mabi=lp64d -Xcc -mcmodel=medany)
    "$SWIFTC" -target "$target" -enable-experimental-feature Embedded -wmo -parse-as-library \
        -Osize -module-name AxAddrSpace "${extra[@]}" -c AxAddrSpace/Sources/AxAddrSpace/*.swift AxAddrSpace/Sources/AxAddrSpace/Formats/*.swift \
        -o "$out/AxAddrSpace-$target.o"
    echo "embedded ok: $target ($(wc -c < "$out/AxAddrSpace-$target.o") bytes)"
done
