#!/usr/bin/env bash
# Builds the .deb or the .rpm (release build included) and prints the package's path on the last
# line. Uses the system's own tools, nothing to compile: dpkg-deb (always on Debian) and rpmbuild
# (Debian's `rpm` package, which scripts/install-deps.sh installs; installed here when missing).
#   deb: staging tree under $target_dir/debian/ + packaging/deb/{control.in,postinst,prerm,postrm},
#        `dpkg-deb --root-owner-group --build`  -> $target_dir/debian/logagent_<version>-1_<arch>.deb
#   rpm: packaging/rpm/logagent.spec, `rpmbuild -bb` (copies the prebuilt binary in %install)
#        -> $target_dir/generate-rpm/logagent-<version>-1.<arch>.rpm
# Both packages hold the same files: /usr/bin/logagent, /etc/logagent/logagent.toml (conffile /
# %config(noreplace)), the systemd unit, the README and the capability drop-in example.
# Usage: packaging/build.sh deb|rpm
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)
bin="$target_dir/release/logagent"

# name, version, description and license of the crate, one per line, from Cargo.toml.
meta() {
  cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
p = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "logagent")
for k in ("name", "version", "description", "license"):
    print(" ".join((p[k] or "").split()))'
}

need_apt() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 && return
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "packaging: apt-get install $2" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >&2
}

# The binary's shared-library dependencies as Debian package names, what cargo-deb's `$auto` gave:
# dpkg-shlibdeps (dpkg-dev) when installed, with the minimum versions from the libraries' symbols
# files (e.g. "libc6 (>= 2.34), libssl3 (>= 3.0.0)"); otherwise the packages that own the ldd
# libraries (dpkg -S), unversioned. librdkafka and zlib are compiled in, so that is libc and libssl.
shlibs_depends() {
  if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    local tmp out
    tmp=$(mktemp -d)
    mkdir "$tmp/debian" && touch "$tmp/debian/control" # dpkg-shlibdeps insists on one
    if out=$(cd "$tmp" && dpkg-shlibdeps -O --ignore-missing-info "$bin" 2>/dev/null); then
      rm -rf "$tmp"
      sed -n 's/^shlibs:Depends=//p' <<<"$out"
      return
    fi
    rm -rf "$tmp"
    echo "packaging: dpkg-shlibdeps failed, using dpkg -S on the ldd output" >&2
  fi
  local lib path pkgs=()
  while read -r lib path; do
    local pkg="" p
    for p in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
      pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && break
    done
    [ -n "$pkg" ] || { echo "packaging: no package owns $lib ($path)" >&2; exit 1; }
    pkgs+=("$pkg")
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
  printf '%s\n' "${pkgs[@]}" | sort -u | paste -sd, | sed 's/,/, /g'
}

build_deb() {
  local name version description license arch stage deb
  { read -r name; read -r version; read -r description; read -r license; } < <(meta)
  [ -n "$version" ] || { echo "packaging: cannot read the crate version" >&2; exit 1; }
  arch=$(dpkg --print-architecture)
  stage="$target_dir/debian/$name"
  deb="$target_dir/debian/${name}_${version}-1_${arch}.deb"
  rm -rf "$stage" && mkdir -p "$stage/DEBIAN"
  chmod 0755 "$stage" "$stage/DEBIAN"

  # Files: the same list, modes and paths as the rpm (the unit under /lib on Debian). The config is
  # root:root 0640 in the archive; postinst hands it to group logagent once the group exists.
  install -D -m 0755 "$bin" "$stage/usr/bin/logagent"
  install -D -m 0640 conf/logagent.toml "$stage/etc/logagent/logagent.toml"
  install -D -m 0644 systemd/logagent.service "$stage/lib/systemd/system/logagent.service"
  install -D -m 0644 systemd/cap-dac-read-search.conf "$stage/usr/share/doc/logagent/examples/cap-dac-read-search.conf"
  install -D -m 0644 README.md "$stage/usr/share/doc/logagent/README.md"
  # Debian policy's machine-readable copyright file (cargo-deb generated the same one).
  printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: %s\nCopyright: logagent developers\nLicense: %s\n' \
    "$name" "$license" >"$stage/usr/share/doc/logagent/copyright"
  chmod 0644 "$stage/usr/share/doc/logagent/copyright"
  find "$stage" -type d -exec chmod 0755 {} +

  # Control area: maintainer scripts, conffiles (everything under /etc, as cargo-deb did), md5sums.
  local s
  for s in postinst prerm postrm; do install -m 0755 "packaging/deb/$s" "$stage/DEBIAN/$s"; done
  (cd "$stage" && find etc -type f | sed 's|^|/|' | sort) >"$stage/DEBIAN/conffiles"
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$stage/DEBIAN/md5sums"
  local size depends
  size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
  depends=$(shlibs_depends)
  [ -n "$depends" ] || { echo "packaging: no shared-library dependencies found for $bin" >&2; exit 1; }
  description=$(sed 's/[\\|&]/\\&/g' <<<"$description") # literal in the sed replacement below
  sed -e "s|@NAME@|$name|" -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" \
    -e "s|@INSTALLED_SIZE@|$size|" -e "s|@SHLIBS@|$depends|" -e "s|@DESCRIPTION@|$description|" \
    packaging/deb/control.in >"$stage/DEBIAN/control"
  chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

  rm -f "$deb"
  # xz: dpkg-deb's default and what cargo-deb used; every dpkg can read it. About 13 s here.
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
  echo "$deb"
}

build_rpm() {
  need_apt rpmbuild rpm
  local name version description license top out
  { read -r name; read -r version; read -r description; read -r license; } < <(meta)
  [ -n "$version" ] || { echo "packaging: cannot read the crate version" >&2; exit 1; }
  top="$target_dir/rpmbuild"
  out="$target_dir/generate-rpm"
  rm -rf "$top" && mkdir -p "$top" "$out"
  # --buildroot: the %install tree; _rpmdir + _build_name_fmt: the .rpm lands in $out directly.
  # zstd level 9 (rpm >= 4.14: RHEL 8, Fedora 28): under 1 s; level 19 takes 15 s for 11% less.
  rpmbuild -bb --quiet \
    --define "_topdir $top" \
    --buildroot "$top/BUILDROOT" \
    --define "_rpmdir $out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "_binary_payload w9.zstdio" \
    --define "pkg_version $version" \
    --define "pkg_description $description" \
    --define "pkg_license $license" \
    --define "src_root $root" \
    --define "bin_path $bin" \
    packaging/rpm/logagent.spec >&2
  ls -t "$out/$name-$version"-1.*.rpm | head -1
}

case "${1:-}" in
deb)
  cargo build --release >&2
  build_deb
  ;;
rpm)
  cargo build --release >&2
  build_rpm
  ;;
*)
  echo "usage: $0 deb|rpm" >&2
  exit 2
  ;;
esac
