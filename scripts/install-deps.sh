#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian machine with only Rust:
# protoc and its well-known .proto files (etcd-client's build), Debian's etcd 3.4 (server + etcdctl), rpm (to inspect .rpm files),
# Debian's InfluxDB 1.6 (influxd, for the host-metrics tests; never started as a service), and the tansu Kafka-protocol broker pinned at 0.6.0. Every step is skipped when already done.
# `--build`: only what compiling needs (protoc, OpenSSL headers, pkg-config) — no services.
set -euo pipefail

build_only=0
[ "${1:-}" = "--build" ] && build_only=1

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# etcd-client's build also needs protoc's well-known types (descriptor.proto), which Debian ships
# in libprotobuf-dev, a mere Recommends of protobuf-compiler.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ "$build_only" -eq 0 ]; then
  command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
  command -v rpm >/dev/null 2>&1 || need_apt+=(rpm)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
  command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  # etcd-server's postinst would start a system etcd; we never use it. A policy-rc.d that answers
  # 101 ("action forbidden") keeps invoke-rc.d / deb-systemd-invoke from starting any service during
  # this install. It is created only when the host has none, and removed right after. Nothing is
  # stopped or killed: an etcd that was running before keeps running.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# install-deps.sh (logagent): no service starts during this apt-get install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    trap '[ "$own_policy" -eq 1 ] && $SUDO rm -f "$policy"; true' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ "$own_policy" -eq 1 ]; then
    $SUDO rm -f "$policy"
    own_policy=0
  fi
  # The etcd unit we just installed (etcd-server was not there before) must not start at boot either.
  # Only disabled, never stopped: with the policy above it was never started.
  if [[ " ${need_apt[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable etcd >/dev/null 2>&1 || true
  fi
  # Likewise influxdb's unit: the tests start their own influxd on a free port.
  if [[ " ${need_apt[*]} " == *" influxdb "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable influxdb >/dev/null 2>&1 || true
  fi
fi

if [ "$build_only" -eq 1 ]; then
  echo "install-deps: ok for building (protoc, OpenSSL headers, pkg-config)"
  exit 0
fi

TANSU_VERSION=0.6.0
if ! { [ -x "$HOME/.cargo/bin/tansu" ] && "$HOME/.cargo/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; }; then
  echo "install-deps: cargo install tansu $TANSU_VERSION (about 20 minutes on 2 cores, once per machine)"
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql
fi
echo "install-deps: ok (protoc, etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), influxd $(influxd version 2>/dev/null | awk '{print $2}'), tansu $TANSU_VERSION)"
