#!/usr/bin/env bash
# Runs every test of the workspace on both backends: first on the default (io_uring where the
# kernel allows it, else epoll), then forced onto epoll. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== tests on the default backend (RINGLOOP_BACKEND=${RINGLOOP_BACKEND:-auto})"
cargo test --workspace --all-targets "$@"

echo "== doctests"
cargo test --workspace --doc "$@"

echo "== tests on the epoll backend (RINGLOOP_BACKEND=epoll)"
RINGLOOP_BACKEND=epoll cargo test --workspace --all-targets "$@"

echo "== proactor tests with every optional io_uring feature turned off (old-kernel paths)"
RINGLOOP_URING_DISABLE=all cargo test -p ringloop-proactor "$@"
