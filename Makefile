# The two commands that matter: `make demo` (the agent end to end on this machine) and `make test`
# (everything CI checks). Both install what is missing first (scripts/install-deps.sh).
SHELL := /bin/bash
# cargo-installed tools (tansu) live here; a fresh login shell may
# not have it on PATH yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
BENCH_ARGS ?=

.PHONY: all help deps deps-build build lint fmt test demo bench

all: build

help:
	@echo "make deps   install protoc, etcd 3.4, rpm and the tansu broker (skips what is there)"
	@echo "make deps-build  install only what compiling needs (protoc, OpenSSL headers, pkg-config)"
	@echo "make build  cargo build --release"
	@echo "make lint   rustfmt check + clippy with warnings as errors"
	@echo "make test   deps, lint, every test (integration tests start etcd and tansu), package-test"
	@echo "make demo   run the agent end to end against local etcd and tansu"
	@echo "make bench  throughput benchmark (BENCH_ARGS=... passes arguments)"
	@echo "make deb    Debian package (dpkg-deb)"
	@echo "make rpm    RPM package (rpmbuild)"
	@echo "make package-test  build both packages, install and purge the .deb here, inspect the .rpm"

deps:
	scripts/install-deps.sh

# Compiling needs no service: etcd, tansu and rpm are installed only by the targets that run them.
deps-build:
	scripts/install-deps.sh --build

build: deps-build
	$(CARGO) build --release

fmt:
	$(CARGO) fmt --all

lint: deps-build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: deps lint
	$(CARGO) test --all-targets
	$(MAKE) package-test

demo:
	scripts/demo.sh

bench: deps
	$(CARGO) build --release --bin logagent
	$(CARGO) run --release --example bench -- $(or $(BENCH_ARGS),--scenario all)

include packaging/Makefile.inc
