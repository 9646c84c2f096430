#!/usr/bin/env bash
# Builds the .deb or the .rpm (release build included) and prints the package's path on the last
# line. Installs the packaging tool on first use, pinned, with `cargo install` (compiles it: about
# 3 min for cargo-deb and 7-13 min for cargo-generate-rpm on 2 cores, once per machine).
# Usage: packaging/build.sh deb|rpm
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
target_dir=${CARGO_TARGET_DIR:-target}

need_tool() { # cargo subcommand, crate, version
  if ! cargo "$1" --version >/dev/null 2>&1; then
    echo "packaging: cargo install $2 $3 (once per machine)" >&2
    cargo install --locked "$2" --version "$3" >&2
  fi
}

case "${1:-}" in
deb)
  need_tool deb cargo-deb "$CARGO_DEB_VERSION"
  # cargo-deb runs `cargo build --release` itself; the .deb goes to $target_dir/debian/.
  cargo deb >&2
  ls -t "$target_dir"/debian/logagent_*.deb | head -1
  ;;
rpm)
  need_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
  cargo build --release >&2
  # Reads the assets (target/release/...) from CARGO_TARGET_DIR when set; the .rpm goes to
  # $target_dir/generate-rpm/.
  cargo generate-rpm >&2
  ls -t "$target_dir"/generate-rpm/logagent-*.rpm | head -1
  ;;
*)
  echo "usage: $0 deb|rpm" >&2
  exit 2
  ;;
esac
