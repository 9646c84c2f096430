#!/usr/bin/env bash
# Package test (`make package-test`, run by CI): builds the .deb and the .rpm, installs the .deb on
# this machine with dpkg and checks files, owners, modes, the conffile, the user, the state
# directory, the installed binary and that nothing got enabled, then purges it and checks that it
# is gone; inspects the .rpm with Debian's rpm (file list, modes, %config(noreplace), scripts,
# requirements); runs `systemd-analyze verify` on the unit; plays systemd's side of sd_notify
# against the built binary (tests/packaging/notify_check.py).
#
# Needs root (dpkg -i). Refuses to run where a logagent package (or its leftover configuration) is
# present that this test did not install: purging it would delete /etc/logagent and the saved offsets
# in /var/lib/logagent. Each install by the test is recorded in $MARKER first, so a package left by an
# interrupted run of the test is recognised and purged. A logagent user that did not exist before the
# run is deleted at the end.
# Ends with "package-test: N passed, M failed"; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "  ok   $1"; }
fail() { failed=$((failed + 1)); echo "  FAIL $1"; }
check() { # description, command...
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
equals() { # description, expected, actual
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}
summary() {
  echo "package-test: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# Script text without comments must not enable, start or preset a unit (try-restart is fine: it
# restarts only a running agent).
enables_nothing() { ! grep -v '^[[:space:]]*#' <<<"$1" | grep -Eq 'systemctl[[:space:]]+(--[a-z-]+[[:space:]]+)*(enable|start|preset|reenable)'; }
installed() { dpkg-query -W -f='${Status}' logagent 2>/dev/null | grep -q "install ok installed"; }

# Present while a logagent package installed by this test may be on the machine.
MARKER=${LOGAGENT_PACKAGE_TEST_MARKER:-/var/lib/logagent-package-test.installed}
# Known to dpkg in any state (installed, or removed with its conffiles left): `dpkg -s` answers.
known_to_dpkg() { dpkg -s logagent >/dev/null 2>&1; }
if known_to_dpkg && [ ! -e "$MARKER" ]; then
  echo "package-test: refusing to run: a logagent package is present on this machine and was not installed by this test:" >&2
  dpkg -s logagent 2>/dev/null | grep -E '^(Status|Version):' | sed 's/^/  /' >&2
  echo "  The test installs and purges logagent; purging deletes /etc/logagent and the offsets in /var/lib/logagent." >&2
  echo "  Run it on a build or CI machine, or remove the package yourself first (dpkg --purge logagent)." >&2
  exit 3
fi

user_existed=0
getent passwd logagent >/dev/null && user_existed=1
cleanup() {
  # Only what this test installed (the marker says so) is purged.
  if [ -e "$MARKER" ]; then
    if known_to_dpkg; then $SUDO dpkg --purge logagent >/dev/null 2>&1 || true; fi
    known_to_dpkg || $SUDO rm -f "$MARKER"
  fi
  if [ "$user_existed" -eq 0 ] && getent passwd logagent >/dev/null; then
    $SUDO userdel logagent >/dev/null 2>&1 || true
  fi
  if [ "$user_existed" -eq 0 ] && getent group logagent >/dev/null; then
    $SUDO groupdel logagent >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

need_apt=()
command -v rpm >/dev/null || need_apt+=(rpm)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "package-test: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if known_to_dpkg; then
  echo "package-test: purging the logagent package an interrupted run of this test left ($MARKER)"
  $SUDO dpkg --purge logagent >/dev/null
fi
$SUDO rm -f "$MARKER"

version=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"name":"logagent","version":"\([^"]*\)".*/\1/p')
[ -n "$version" ] || { echo "package-test: cannot read the crate version"; exit 1; }

echo "== build"
deb=$(packaging/build.sh deb | tail -1) && [ -f "$deb" ] && pass "built $deb" || { fail "build .deb"; summary; exit 1; }
rpm=$(packaging/build.sh rpm | tail -1) && [ -f "$rpm" ] && pass "built $rpm" || { fail "build .rpm"; summary; exit 1; }

echo "== binary"
bin="${CARGO_TARGET_DIR:-target}/release/logagent"
# Anything beyond the C library's own parts and the system OpenSSL (declared: libssl3 / openssl-libs)
# means a dynamic dependency the packages do not declare (librdkafka, libz, ... must be compiled in).
extra=$(ldd "$bin" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|/lib6?4?/ld-linux|ld-linux|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|libssl\.so\.3|libcrypto\.so\.3)' || true)
equals "only libc-family and OpenSSL shared libraries (ldd)" "" "$(echo $extra)"
check "deb declares the OpenSSL it links" sh -c 'dpkg-deb -f "$1" Depends | grep -q libssl3' _ "$deb"

echo "== service contract without systemd (sd_notify READY/WATCHDOG/STOPPING, SIGHUP, SIGTERM)"
contract=$(python3 tests/packaging/notify_check.py "$bin" 2>&1)
rc=$?
echo "$contract"
passed=$((passed + $(grep -c '^  ok ' <<<"$contract")))
failed=$((failed + $(grep -c '^  FAIL ' <<<"$contract")))
[ $rc -eq 0 ] || grep -q '^  FAIL ' <<<"$contract" || fail "notify_check.py exited $rc"

echo "== .deb: install"
# Written before dpkg -i, so an interruption anywhere after leaves the package recognisable as ours.
echo "installed by tests/packaging/test.sh (pid $$) at $(date -u +%FT%TZ)" | $SUDO tee "$MARKER" >/dev/null
check "dpkg -i" $SUDO dpkg -i "$deb"
check "package installed" installed
equals "deb version" "$version" "$(dpkg-query -W -f='${Version}' logagent | sed 's/-[^-]*$//')"

mode() { stat -c '%a %U %G' "$1" 2>/dev/null || echo missing; }
equals "/usr/bin/logagent mode/owner" "755 root root" "$(mode /usr/bin/logagent)"
equals "/etc/logagent/logagent.toml mode/owner" "640 root logagent" "$(mode /etc/logagent/logagent.toml)"
check "logagent.toml is the shipped config" cmp -s conf/logagent.toml /etc/logagent/logagent.toml
check "logagent.toml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' logagent | grep -q '^ /etc/logagent/logagent.toml '"
equals "unit file mode/owner" "644 root root" "$(mode /lib/systemd/system/logagent.service)"
check "unit file is the shipped one" cmp -s systemd/logagent.service /lib/systemd/system/logagent.service
check "capability drop-in example shipped" test -f /usr/share/doc/logagent/examples/cap-dac-read-search.conf
check "README shipped" test -f /usr/share/doc/logagent/README.md
check "user logagent exists" getent passwd logagent
check "user logagent is a system user without a login shell" sh -c 'u=$(getent passwd logagent); [ "$(echo "$u" | cut -d: -f3)" -lt 1000 ] && echo "$u" | grep -q nologin'
check "user logagent is in group adm" sh -c 'id -nG logagent | tr " " "\n" | grep -qx adm'
equals "/var/lib/logagent mode/owner" "750 logagent logagent" "$(mode /var/lib/logagent)"

echo "== .deb: installed binary"
equals "logagent --version" "logagent $version" "$(/usr/bin/logagent --version 2>&1)"
check "logagent validate (root)" /usr/bin/logagent validate
check "logagent validate as user logagent (what ExecStartPre runs)" $SUDO runuser -u logagent -- /usr/bin/logagent validate --config /etc/logagent/logagent.toml
bad=$(mktemp)
printf '[shutdown]\ngrace_ms = "soon"\n' >"$bad"
check "logagent validate rejects a bad config" sh -c "/usr/bin/logagent validate --config '$bad'; [ \$? -ne 0 ]"
rm -f "$bad"

echo "== .deb: nothing enabled or started"
check "no enablement symlink" sh -c '! ls /etc/systemd/system/*.wants/logagent.service'
enabled=$(systemctl --root=/ is-enabled logagent.service 2>/dev/null)
equals "systemctl is-enabled" "disabled" "$enabled"
check "no installed logagent running" sh -c '! pgrep -f "^/usr/bin/logagent( |\$)"'
debscripts=$(mktemp -d)
dpkg-deb -e "$deb" "$debscripts"
check "deb maintainer scripts enable and start nothing" enables_nothing "$(cat "$debscripts"/postinst "$debscripts"/prerm "$debscripts"/postrm)"
rm -rf "$debscripts"

echo "== systemd unit"
# The binary exists now, so the unit verifies as shipped; verify-unit.sh adds the drop-in case.
check "systemd-analyze verify systemd/logagent.service" sh -c 'out=$(systemd-analyze verify systemd/logagent.service 2>&1) && [ -z "$out" ]'
check "systemd-analyze verify (installed unit)" sh -c 'out=$(systemd-analyze verify /lib/systemd/system/logagent.service 2>&1) && [ -z "$out" ]'
check "verify-unit.sh (unit alone and with the capability drop-in)" tests/packaging/verify-unit.sh

echo "== .deb: upgrade keeps an edited config"
$SUDO sed -i 's/^level = "info"/level = "debug"/' /etc/logagent/logagent.toml
check "dpkg -i again (reinstall)" $SUDO dpkg -i --force-confold "$deb"
check "edited logagent.toml kept" grep -q '^level = "debug"' /etc/logagent/logagent.toml
equals "/var/lib/logagent still owned by logagent" "750 logagent logagent" "$(mode /var/lib/logagent)"

echo "== .deb: purge"
$SUDO touch /var/lib/logagent/offsets.json
check "dpkg --purge" $SUDO dpkg --purge logagent
check "package gone" sh -c '! dpkg-query -W logagent'
for f in /usr/bin/logagent /etc/logagent /lib/systemd/system/logagent.service /usr/share/doc/logagent /var/lib/logagent; do
  check "$f removed" test ! -e "$f"
done
check "user logagent kept (Debian keeps system users)" getent passwd logagent
known_to_dpkg || $SUDO rm -f "$MARKER"

echo "== host safety of the scripts"
# Scripts end only what they started, by PID: nothing kills by process name.
check "no script kills by name (pkill/killall)" sh -c '! grep -nwE "pkill|killall" scripts/*.sh packaging/build.sh packaging/deb/* packaging/rpm/* tests/packaging/verify-unit.sh'

echo "== .rpm"
files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/bin/logagent /etc/logagent/logagent.toml /usr/lib/systemd/system/logagent.service \
  /usr/share/doc/logagent/README.md /usr/share/doc/logagent/examples/cap-dac-read-search.conf; do
  check "rpm contains $f" grep -qx "$f" <<<"$files"
done
check "rpm --configfiles lists logagent.toml" sh -c "rpm -qp --configfiles '$rpm' | grep -qx /etc/logagent/logagent.toml"
# %{FILEFLAGS:fflags}: c = %config, n = noreplace.
flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null | awk '$1 == "/etc/logagent/logagent.toml" {print $2}')
equals "logagent.toml is %config(noreplace)" "cn" "$flags"
attrs=$(rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME}\n]' "$rpm" 2>/dev/null)
equals "rpm /usr/bin/logagent mode/owner" "-rwxr-xr-x root root" "$(awk '$1 == "/usr/bin/logagent" {print $2, $3, $4}' <<<"$attrs")"
equals "rpm logagent.toml mode/owner" "-rw-r----- root logagent" "$(awk '$1 == "/etc/logagent/logagent.toml" {print $2, $3, $4}' <<<"$attrs")"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
check "rpm preinstall creates the logagent user" sh -c 'echo "$1" | sed -n "/^preinstall/,/^[a-z]* scriptlet/p" | grep -q "useradd --system"' _ "$scripts"
check "rpm postinstall creates /var/lib/logagent" grep -q "install -d -o logagent -g logagent -m 0750 /var/lib/logagent" <<<"$scripts"
check "rpm scripts enable and start nothing" enables_nothing "$scripts"
requires=$(rpm -qpR "$rpm" 2>/dev/null)
check "rpm requires no librdkafka/libz/libsasl (compiled in)" sh -c '! echo "$1" | grep -Eiq "rdkafka|libz|libzstd|libsasl"' _ "$requires"
check "rpm requires the OpenSSL it links" sh -c 'echo "$1" | grep -q openssl-libs' _ "$requires"
check "rpm metadata: license" sh -c "rpm -qp --qf '%{LICENSE}' '$rpm' | grep -qx Apache-2.0"

summary
