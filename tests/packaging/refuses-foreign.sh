#!/usr/bin/env bash
# Host-safety test of tests/packaging/test.sh (run first by `make package-test`, needs no root):
# with a logagent package present that the test did not install, test.sh must stop with a clear
# message before it purges, builds or installs anything. dpkg, dpkg-query, sudo and cargo are
# replaced by stubs on PATH that only record how they were called, so nothing on this machine changes.
set -uo pipefail
cd "$(dirname "$0")/../.."

stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
calls="$stubs/calls"
for tool in dpkg dpkg-query cargo apt-get; do
  cat >"$stubs/$tool" <<STUB
#!/bin/sh
echo "$tool \$*" >>"$calls"
case "$tool \$1" in
"dpkg -s") printf 'Package: logagent\nStatus: install ok installed\nVersion: 0.0.9-1\n' ;;
esac
exit 0
STUB
done
printf '#!/bin/sh\n"$@"\n' >"$stubs/sudo"
chmod +x "$stubs"/*

out=$(PATH="$stubs:$PATH" LOGAGENT_PACKAGE_TEST_MARKER="$stubs/no-marker" timeout 60 tests/packaging/test.sh 2>&1)
rc=$?
failed=0
if [ "$rc" -ne 3 ]; then echo "  FAIL test.sh exited $rc, expected 3 (refused)"; failed=1; fi
if ! grep -q "refusing to run: a logagent package is present" <<<"$out"; then
  echo "  FAIL no refusal message; output:"; sed 's/^/    /' <<<"$out"; failed=1
fi
if grep -Eq -- "--purge|--remove|-r |-P |-i " "$calls" 2>/dev/null || grep -q '^cargo' "$calls" 2>/dev/null; then
  echo "  FAIL test.sh went on after finding a foreign package:"; sed 's/^/    /' "$calls"; failed=1
fi
[ "$failed" -eq 0 ] && echo "  ok   package-test refuses a logagent package it did not install (touches nothing)"
exit "$failed"
