#!/usr/bin/env bash
# Side-by-side benchmark: ferry and skopeo sync copy the same 20 repositories / 120 tags /
# ~480 MB (shared base layers, multi-arch indexes, signature tags) between real local
# registries, first run and no-op second run. Checks ferry's result tag by tag, prints times,
# peak memory and ratios. Not part of the test suite (it moves half a gigabyte).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
[ -x /usr/bin/time ] || missing+=(time)
if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo test --release --locked --test it scale_wildcard_copy_and_skopeo_comparison -- --ignored --nocapture
