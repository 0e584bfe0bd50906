#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, config files, unit and end-to-end tests
# (the end-to-end tests also run deploy/check.py on the deployment files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
for f in conf/*.yaml conf/examples/*.yaml; do
  [ -e "$f" ] || continue
  OPENAI_API_KEY=dummy GROQ_API_KEY=dummy AZURE_OPENAI_API_KEY=dummy ANTHROPIC_API_KEY=dummy \
    GEMINI_API_KEY=dummy AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy \
    "${CARGO_TARGET_DIR:-target}/debug/tollgate" check -c "$f"
done
TOLLGATE_VENV="$PWD/.venv" cargo test --workspace -- --test-threads=2
