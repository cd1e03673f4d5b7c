#!/usr/bin/env bash
# Installs axvm with its man page and shell completions:
#   scripts/install.sh [--prefix DIR] [--swiftpm] [--config debug|release]
#     PREFIX/bin/axvm                                 the static Embedded Swift axvm for this
#                                                     host (scripts/build-static.sh); with
#                                                     --swiftpm the SwiftPM build instead (it
#                                                     needs the Swift runtime libraries)
#     PREFIX/share/man/man1/axvm.1                    the manual, with the exit statuses as its
#                                                     EXIT STATUS section
#     PREFIX/share/bash-completion/completions/axvm   completions for bash, zsh and fish
#     PREFIX/share/zsh/site-functions/_axvm
#     PREFIX/share/fish/vendor_completions.d/axvm.fish
# PREFIX defaults to /usr/local. The installed axvm writes its own manual and completions
# (--generate-manual, --generate-completion-script SHELL: both builds, from the option table
# in Sources/AxVMM/CommandLine). --config (default release) is the SwiftPM build's, for
# --swiftpm; AXVM_SCRATCH names its scratch path (default .build).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local config=release swiftpm=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift 2 ;;
        --swiftpm) swiftpm=1; shift ;;
        --config) [ "${2:-}" = debug ] || [ "${2:-}" = release ] || { echo "install: --config debug or release, not '${2:-}'" >&2; exit 2; }
                  config=$2; shift 2 ;;
        *) echo "install: unknown argument '$1' (--prefix DIR, --swiftpm, --config debug|release)" >&2; exit 2 ;;
    esac
done

if [ "$swiftpm" = 1 ]; then
    scratch=${AXVM_SCRATCH:-.build}
    swift build -c "$config" --scratch-path "$scratch" --product axvm
    binary=$(swift build -c "$config" --scratch-path "$scratch" --show-bin-path)/axvm
else
    scripts/build-static.sh "$(uname -m)"
    binary=.build-static/$(uname -m)/axvm
fi

staged=$(mktemp -d)
trap 'rm -rf "$staged"' EXIT
"$binary" --generate-manual > "$staged/axvm.1"
grep -q '^  124 ' "$staged/axvm.1" || { echo "install: the exit status table is missing from the manual" >&2; exit 1; }
for shell in bash zsh fish; do "$binary" --generate-completion-script "$shell" > "$staged/completion.$shell"; done

install -D -m 755 "$binary" "$prefix/bin/axvm"
install -D -m 644 "$staged/axvm.1" "$prefix/share/man/man1/axvm.1"
install -D -m 644 "$staged/completion.bash" "$prefix/share/bash-completion/completions/axvm"
install -D -m 644 "$staged/completion.zsh" "$prefix/share/zsh/site-functions/_axvm"
install -D -m 644 "$staged/completion.fish" "$prefix/share/fish/vendor_completions.d/axvm.fish"
echo "install: $("$prefix/bin/axvm" --version) in $prefix/bin"
echo "install: man page $prefix/share/man/man1/axvm.1; completions for bash, zsh and fish under $prefix/share"
