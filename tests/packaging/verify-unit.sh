#!/usr/bin/env bash
# `systemd-analyze verify` of systemd/logagent.service, alone and with the CAP_DAC_READ_SEARCH
# drop-in. verify insists that every Exec*= binary exists, so it checks a copy whose /usr/bin/logagent
# points at the release build (built if missing); everything else is the file as shipped. Any
# message counts as a failure: verify exits 0 on warnings such as unknown keys.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v systemd-analyze >/dev/null || { echo "verify-unit: systemd-analyze missing (apt-get install systemd)" >&2; exit 1; }
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/logagent"
[ -x "$bin" ] || cargo build --release >&2
bin=$(realpath "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/alone" "$tmp/dropin" "$tmp/dropin/logagent.service.d"
sed "s#/usr/bin/logagent#$bin#g" systemd/logagent.service >"$tmp/alone/logagent.service"
cp "$tmp/alone/logagent.service" "$tmp/dropin/"
cp systemd/cap-dac-read-search.conf "$tmp/dropin/logagent.service.d/"

status=0
for case in alone dropin; do
  # verify also reads drop-ins from the unit file's own directory.
  if out=$(systemd-analyze verify "$tmp/$case/logagent.service" 2>&1) && [ -z "$out" ]; then
    echo "verify-unit: ok ($case)"
  else
    echo "verify-unit: FAILED ($case)"
    echo "$out"
    status=1
  fi
done
exit $status
