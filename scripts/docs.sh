#!/usr/bin/env bash
# The AxAddrSpace documentation (DocC): extracts the library's symbol graph, checks that every
# public symbol has a doc comment, and builds the catalog (AxAddrSpace.docc) with warnings as
# errors (an unresolved symbol link is one) into .build-docs/AxAddrSpace.doccarchive.
#   scripts/docs.sh          build and check
#   open the archive with `docc preview`, or host it as a static site
# The library keeps no dependency for this: docc is the toolchain's own.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build-docs
graphs=$PWD/$out/symbol-graphs  # absolute: swiftc runs in the package directory
# A fresh build: the symbol graph is written only when the module compiles.
rm -rf "$graphs" "$out/build" "$out/AxAddrSpace.doccarchive"
mkdir -p "$graphs"
swift build --package-path AxAddrSpace --scratch-path "$out/build" --target AxAddrSpace \
    -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$graphs" \
    -Xswiftc -symbol-graph-minimum-access-level -Xswiftc public > "$out/build.log" 2>&1 \
    || { cat "$out/build.log"; echo "docs: the library did not build" >&2; exit 1; }

# Every public symbol declared in the library's sources has a doc comment. A protocol
# extension's member, copied into each conforming type ("::SYNTHESIZED::"), counts once.
python3 - "$graphs/AxAddrSpace.symbols.json" <<'PY'
import json, sys
graph = json.load(open(sys.argv[1]))
by_id = {s["identifier"]["precise"]: s for s in graph["symbols"]}
own, missing = 0, []
for s in graph["symbols"]:
    uri = s.get("location", {}).get("uri", "")
    if "/AxAddrSpace/Sources/AxAddrSpace/" not in uri:
        continue
    ident = s["identifier"]["precise"]
    if "::SYNTHESIZED::" in ident:
        base = by_id.get(ident.split("::SYNTHESIZED::")[0])
        if base is not None and base.get("docComment"):
            continue
    own += 1
    if not s.get("docComment"):
        line = s["location"]["position"]["line"] + 1
        missing.append(f'{uri.split("/AxAddrSpace/Sources/")[1]}:{line}: {".".join(s["pathComponents"])}')
for m in sorted(missing):
    print(f"docs: undocumented public symbol: {m}", file=sys.stderr)
if missing:
    sys.exit(f"docs: {len(missing)} of {own} public symbols have no doc comment")
print(f"docs: {own} public symbols, every one documented")
PY

docc convert AxAddrSpace/Sources/AxAddrSpace/AxAddrSpace.docc --additional-symbol-graph-dir "$graphs" \
    --fallback-display-name AxAddrSpace --fallback-bundle-identifier org.axvm.AxAddrSpace \
    --output-path "$out/AxAddrSpace.doccarchive" --warnings-as-errors > "$out/docc.log" 2>&1 \
    || { cat "$out/docc.log"; echo "docs: docc reported problems (warnings are errors)" >&2; exit 1; }
echo "docs: $out/AxAddrSpace.doccarchive (DocC, no warnings)"
