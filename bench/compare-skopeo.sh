#!/usr/bin/env bash
# Side-by-side benchmark of ferry and `skopeo sync --all` (Debian's skopeo) on the same local
# registries, cold and as a no-op re-run:
#   loopback   20 repositories / 120 tags / ~480 MB (shared base layers, multi-arch indexes,
#              signature tags), registries on 127.0.0.1
#   wan        the same corpus through proxies that add ~40 ms per round trip and pace every
#              connection to 100 Mbit/s
#   1 GiB      one 1 GiB layer: peak memory (RSS) of each tool
#   kill       the loopback corpus, SIGKILLed three times and resumed: bytes sent and read vs
#              one clean run
#   interrupt  one 1064 MiB layer, SIGTERM at half staged (source behind a 40 ms / 200 Mbit/s
#              link) and SIGKILL at half staged (loopback): what ferry and skopeo read and send
#              after the interruption
#   many       100 repositories / 1,600 tags / 4,706 unique blobs of a few KiB (issue 16):
#              ferry cold and no-op, skopeo cold, with the requests each asked of the source
#              and of the target by method and resource; FERRY_BENCH_BIN_BEFORE=/path/to/ferry
#              times a second ferry build on the same corpus, interleaved
#              (FERRY_BENCH_ORDER=before-first runs it first); registries store in /dev/shm
#   scale      100 repositories × 1,000 tags over 1,000 manifests (issue 24; tags written
#              straight into the source registry's storage): ferry run cold, no-op and
#              --recheck, plan (text, JSON), verify, status and report merge, each with wall
#              time, peak RSS and requests; FERRY_BENCH_TAGS=20000 for a smaller corpus;
#              registries store in /dev/shm
#   many-wan   the same corpus with source and target behind 40 ms / 200 Mbit/s proxies: ferry
#              cold and no-op, and ferry beside skopeo on the first 10 repositories
# ferry's result is checked tag by tag. Prints times, ratios and peak memory; the figures are
# recorded in docs/benchmarks.md. Not part of the test suite (it moves gigabytes).
#
#   ./bench/compare-skopeo.sh            # every scenario, one after the other
#   ./bench/compare-skopeo.sh loopback   # one of: loopback, wan, gib, kill, interrupt, many, many-wan, scale
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
exact=()
case "${1:-all}" in
    loopback) filter=bench_loopback ;;
    wan) filter=bench_wan ;;
    gib) filter=bench_one_gib_layer_memory ;;
    kill) filter=bench_kill_and_resume ;;
    interrupt) filter=bench_interrupted_large_layer ;;
    many)
        filter=bench_many::bench_many
        exact=(--exact)
        # Registry storage (and checkpoints) in memory unless TMPDIR says otherwise: this one
        # measures round trips, and the tens of thousands of small files a registry writes
        # for it add seconds of disk noise that differ from run to run.
        if [ -d /dev/shm ]; then export TMPDIR="${TMPDIR:-/dev/shm}"; fi
        ;;
    many-wan) filter=bench_many_wan ;;
    scale)
        filter=bench_scale::bench_scale
        exact=(--exact)
        if [ -d /dev/shm ]; then export TMPDIR="${TMPDIR:-/dev/shm}"; fi
        ;;
    all) filter=bench_ ;;
    *) echo "usage: $0 [loopback|wan|gib|kill|interrupt|many|many-wan|scale|all]" >&2; exit 2 ;;
esac
# One benchmark at a time: they would compete for the two cores.
cargo test --release --locked --test it "$filter" -- --ignored "${exact[@]}" --nocapture --test-threads 1 2>&1 \
    | grep -E '^(fixture|\[|RESULT|test |running| {6}[A-Z]+ |  CPU: )|panicked|assert'
