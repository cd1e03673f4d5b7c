#!/usr/bin/env bash
# The project's test command (README, .ci/run): Embedded Swift build of the library,
# the assembly guests, the bare-metal hypervisors, then every swift-testing test.
# With AXVM_REQUIRE_KVM=1 the KVM tests fail instead of skipping when KVM is unusable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/embedded-check.sh
scripts/build-guests.sh
scripts/baremetal.sh check
swift build --build-tests
swift test --skip-build --no-parallel "$@"
