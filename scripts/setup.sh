#!/usr/bin/env bash
# Installs what building and testing Tollgate needs on a Debian machine, idempotently:
# cmake (Pingora's zlib-ng), a C toolchain and make (also for jemalloc), redis-server,
# PostgreSQL and nginx (started on loopback by the tests and benches), Prometheus (the
# end-to-end test runs every dashboard query against a real server; deploy/check.py uses
# its promtool), PyYAML for deploy/check.py, and a Python venv with the official OpenAI
# SDK (end-to-end drop-in test). Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
# cc and make also build jemalloc, the gateway's allocator (tikv-jemalloc-sys).
command -v cc >/dev/null || need_apt+=(build-essential)
command -v make >/dev/null || need_apt+=(make)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v nginx >/dev/null || need_apt+=(nginx-light)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/bin/prometheus ] || need_apt+=(prometheus)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# deploy/check.py (run by the end-to-end tests) parses the deployment files with PyYAML.
python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

# The OpenAI and Anthropic SDKs for the drop-in tests, in a project-local venv.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import openai, anthropic' >/dev/null 2>&1; then
  echo "setup: creating .venv with the openai and anthropic SDKs"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'openai>=1.40,<3' 'anthropic>=0.40,<1'
fi
echo "setup: ok"
