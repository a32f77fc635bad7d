//! What the benchmark measures: requests by kind from the registries' logs, time, stalls,
//! and the rates it compares.

use super::*;

/// The resource a logged request was about, as ferry's report names it (`manifest`, `blob`,
/// `upload`, `tags`, `catalog`), with a cross-repository mount told apart from an upload and
/// the API root (`/v2/`) as `base`.
pub(crate) fn kind(r: &LoggedRequest) -> String {
    let (path, query) = r.uri.split_once('?').unwrap_or((&r.uri, ""));
    if path == "/v2/" || path == "/v2" {
        return format!("{} base", r.method);
    }
    let kind = ferry::registry::transport::throttle::request_kind(&r.method, path);
    match r.method == "POST" && kind.ends_with(" upload") && query.contains("mount=") {
        true => format!("{kind} (mount)"),
        false => kind,
    }
}

/// What one registry answered during one run: per kind, the count and the statuses.
#[derive(Default)]
pub(crate) struct Tally {
    pub(super) by_kind: BTreeMap<String, BTreeMap<u16, usize>>,
}

impl Tally {
    pub(crate) fn of(requests: &[LoggedRequest]) -> Tally {
        let mut t = Tally::default();
        for r in requests {
            *t.by_kind
                .entry(kind(r))
                .or_default()
                .entry(r.status)
                .or_default() += 1;
        }
        t
    }

    pub(crate) fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.by_kind
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, s)| s.values().sum::<usize>())
            .sum()
    }

    pub(crate) fn total(&self) -> usize {
        self.count(|_| true)
    }

    pub(crate) fn blob_side(&self) -> usize {
        self.count(|k| k.contains(" blob") || k.contains(" upload"))
    }

    pub(crate) fn manifest_side(&self) -> usize {
        self.count(|k| k.ends_with(" manifest"))
    }

    /// `GET blob 4706 [200×4706]; …` on one line per kind.
    pub(crate) fn breakdown(&self) -> String {
        self.by_kind
            .iter()
            .map(|(k, statuses)| {
                let n: usize = statuses.values().sum();
                let s: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
                format!("      {k:<22} {n:>6}  [{}]", s.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Where a registry's request log stands (everything answered so far logged).
pub(crate) async fn mark(reg: &Registry) -> usize {
    reg.sync_log().await;
    reg.requests().len()
}

/// What a registry answered since `mark`; with `FERRY_BENCH_LOG_DIR` set, also written
/// there request by request (`<name>.log`: status, method, URI), for a closer look.
pub(crate) async fn since(reg: &Registry, mark: usize, name: &str) -> Tally {
    reg.sync_log().await;
    let requests = reg.requests().split_off(mark);
    if let Ok(dir) = std::env::var("FERRY_BENCH_LOG_DIR") {
        let lines: String = requests
            .iter()
            .map(|r| format!("{} {} {}\n", r.status, r.method, r.uri))
            .collect();
        let path = std::path::Path::new(&dir).join(format!("{}.log", name.replace(' ', "-")));
        std::fs::write(&path, lines).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    Tally::of(&requests)
}

/// Run `program` under GNU time and count what it asked of `src` and `dst`; with its stdout.
pub(crate) async fn measure(
    label: &str,
    program: &str,
    args: &[&str],
    state: &std::path::Path,
    (src, dst): (&Registry, &Registry),
) -> (Measured, String) {
    let (s0, t0) = (mark(src).await, mark(dst).await);
    let before = stalls();
    let (secs, rss, out, _) = timed(program, args, state).await;
    let after = stalls();
    let measured = Measured {
        secs,
        rss_mib: rss / 1024,
        stalled: [0, 1, 2].map(|i| after[i] - before[i]),
        source: since(src, s0, &format!("{label}.source")).await,
        target: since(dst, t0, &format!("{label}.target")).await,
    };
    (measured, out)
}

/// Seconds in which some task of the machine waited for a CPU and for IO (the kernel's
/// pressure stall counters, `/proc/pressure/{cpu,io}`, `some total`), and CPU seconds the
/// hypervisor gave to other machines (`steal` in `/proc/stat`); zero where the kernel has
/// none. The benchmark's own processes count too; a run that stalled much more than its peers
/// shared the machine with something else.
pub(crate) fn stalls() -> [f64; 3] {
    let pressure = |what: &str| {
        std::fs::read_to_string(format!("/proc/pressure/{what}"))
            .ok()
            .and_then(|s| {
                let some = s.lines().next()?.to_string();
                let total = some
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("total="))?;
                total.parse::<f64>().ok()
            })
            .map_or(0.0, |micros| micros / 1e6)
    };
    // `cpu  user nice system idle iowait irq softirq steal …`, in 1/100 s.
    let steal = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(8)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |ticks| ticks / 100.0);
    [pressure("cpu"), pressure("io"), steal]
}

/// One timed run of one tool and what it asked of both registries.
pub(crate) struct Measured {
    pub(crate) secs: f64,
    pub(crate) rss_mib: u64,
    /// Seconds of CPU stall, IO stall and steal on the machine during the run ([`stalls`]).
    pub(crate) stalled: [f64; 3],
    pub(crate) source: Tally,
    pub(crate) target: Tally,
}

impl Measured {
    /// Print the run and its requests against the bounds (which are about a cold
    /// copy to an empty target; for a no-op they are shown for scale only).
    pub(super) fn print(&self, label: &str, c: &Corpus, detailed: bool) {
        println!(
            "[many] {label}: {:.2} s, peak RSS {} MiB; machine stalled {:.1} s on CPU, {:.1} s on IO, {:.1} s stolen",
            self.secs, self.rss_mib, self.stalled[0], self.stalled[1], self.stalled[2]
        );
        let (b, m) = (c.blobs as f64, c.manifests as f64);
        for (side, t, per_blob, per_manifest) in [
            ("source", &self.source, SOURCE_PER_BLOB, SOURCE_PER_MANIFEST),
            ("target", &self.target, TARGET_PER_BLOB, TARGET_PER_MANIFEST),
        ] {
            let total = t.total();
            let bound = per_blob * b + per_manifest * m;
            println!(
                "[many] {label} @{side}: {total} requests = {:.3}/blob + {:.3}/manifest + {} other; \
                 {:.3} per blob placement; issue bound {per_blob}/blob + {per_manifest}/manifest = {bound:.0}: {}",
                t.blob_side() as f64 / b,
                t.manifest_side() as f64 / m,
                total - t.blob_side() - t.manifest_side(),
                t.blob_side() as f64 / c.placements as f64,
                if total as f64 <= bound { "met" } else { "NOT met" },
            );
            if detailed {
                println!("{}", t.breakdown());
            }
        }
    }
}

/// A target one ferry build filled, cold, and what it takes to run that build again on it.
pub(super) struct Filled {
    pub(super) label: &'static str,
    pub(super) bin: String,
    pub(super) dst: Registry,
    /// Plan, checkpoint and report.
    pub(super) dir: tempfile::TempDir,
    /// Upload sessions the target had seen after the cold copy.
    pub(super) uploads: usize,
}

impl Filled {
    pub(super) fn args(&self) -> Vec<String> {
        let d = self.dir.path();
        ["run", "--progress", "none", "--report"]
            .into_iter()
            .map(String::from)
            .chain([d.join("report.json"), d.join("plan.toml")].map(|p| p.display().to_string()))
            .collect()
    }

    /// ferry `bin` cold into a fresh registry, checked tag by tag.
    pub(super) async fn cold(
        label: &'static str,
        bin: &str,
        src: &Registry,
        c: &Corpus,
    ) -> (Filled, Measured) {
        let dst = Registry::start().await;
        let dir = tempfile::tempdir().unwrap();
        copy_plan(
            dir.path(),
            &[&src.addr, &dst.addr],
            "",
            &format!("{}/org/*", src.addr),
            &format!("{}/org/*", dst.addr),
        );
        let mut filled = Filled {
            label,
            bin: bin.to_string(),
            dst,
            dir,
            uploads: 0,
        };
        let args = filled.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let state = filled.dir.path().join("ferry.db");
        let regs = (src, &filled.dst);
        let (cold, out) = measure(&format!("{label} cold"), bin, &args, &state, regs).await;
        println!("[many] {label} cold: {}", out.trim());
        let copied = format!(
            "{} images copied, 0 already present, 0 failed",
            c.tags.len()
        );
        assert!(out.contains(&copied), "{out}");
        let report = filled.dir.path().join("report.json");
        println!(
            "[many] {label} cold: ferry's report counts {} requests at the target",
            reported_requests(&report, &filled.dst.addr)
        );
        verify(&filled.dst, c).await;
        filled.dst.sync_log().await;
        filled.uploads = uploads(&filled.dst);
        (filled, cold)
    }

    /// The same build again, a no-op: nothing copied, nothing uploaded.
    pub(super) async fn noop(&self, n: usize, src: &Registry, c: &Corpus) -> Measured {
        let label = self.label;
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let state = self.dir.path().join("ferry.db");
        let regs = (src, &self.dst);
        let name = format!("{label} no-op {n}");
        let (noop, out) = measure(&name, &self.bin, &args, &state, regs).await;
        println!("[many] {name}: {:.2} s: {}", noop.secs, out.trim());
        // Every record is trusted: `unchanged` since issue 21; a build before it (the
        // baseline of a comparison) called them present.
        let n = c.tags.len();
        let said = [
            format!("0 images copied, 0 already present, {n} unchanged (trusted from the checkpoint), 0 failed"),
            format!("0 images copied, {n} already present, 0 failed"),
        ];
        assert!(said.iter().any(|s| out.contains(s)), "{out}");
        assert_eq!(
            uploads(&self.dst),
            self.uploads,
            "a no-op run uploads nothing"
        );
        noop
    }
}
