use super::*;
use crate::report::metrics::metrics;
use std::time::Duration;

#[test]
fn metrics_are_prometheus_text() {
    let mut registries = BTreeMap::new();
    registries.insert(
        "ghcr.io".to_string(),
        ReportRegistry {
            requests: 12,
            throttled: 1,
            retries: 2,
            wait_seconds: 3.5,
            ..Default::default()
        },
    );
    let report = Report {
        ferry_version: "0".into(),
        run: Some(1),
        totals: ReportTotals {
            copied: 3,
            present: 1,
            unchanged: 5,
            failed: 2,
            bytes: 100,
            ..Default::default()
        },
        failures: vec!["a".into(), "b".into()],
        items: vec![failed_item()],
        registries,
        merged_from: None,
        ..Report::merged("p.toml".into(), "x".into(), "y".into())
    };
    let failed_items = report.items.iter().filter(|i| i.action == "failed").count();
    let m = metrics(
        &report,
        failed_items,
        1_800_000_000,
        Duration::from_millis(1500),
        Some(17),
    );
    assert!(m.contains("ferry_images{outcome=\"copied\"} 3\n"), "{m}");
    // Issue 21, "What was seen" 6: unchanged apart from present; failed images apart
    // from every failure; the last success as given (the checkpoint's after a failure).
    for sample in [
        "ferry_images{outcome=\"present\"} 1\n",
        "ferry_images{outcome=\"unchanged\"} 5\n",
        "ferry_images{outcome=\"failed\"} 1\n",
        "ferry_failures 2\n",
        "ferry_last_success_timestamp_seconds 17\n",
    ] {
        assert!(m.contains(sample), "{sample}: {m}");
    }
    let never = metrics(&report, 1, 1_800_000_000, Duration::ZERO, None);
    assert!(
        !never.contains("ferry_last_success_timestamp_seconds"),
        "{never}"
    );
    assert!(m.contains("ferry_transferred_bytes 100\n"));
    assert!(m.contains("ferry_registry_requests{registry=\"ghcr.io\"} 12\n"));
    assert!(m.contains("ferry_registry_wait_seconds{registry=\"ghcr.io\"} 3.5\n"));
    assert!(m.contains("# TYPE ferry_run_duration_seconds gauge\n"));
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(!name.is_empty() && value.parse::<f64>().is_ok(), "{line}");
    }
}

fn failed_item() -> ReportItem {
    ReportItem {
        source: "a.io/x:1".into(),
        target: "b.io/x:1".into(),
        digest: None,
        action: "failed".into(),
        bytes: 0,
        seconds: 0.0,
        error: Some("no".into()),
        hint: None,
        rewritten: None,
        updated: None,
        put_back: Vec::new(),
    }
}

fn shard(outcome: &str, started: &str, ended: &str, copied: usize) -> Report {
    let mut registries = BTreeMap::new();
    registries.insert(
        "ghcr.io".to_string(),
        ReportRegistry {
            requests: 10,
            wait_seconds: 0.5,
            ..Default::default()
        },
    );
    Report {
        ferry_version: "0".into(),
        shard: Some(format!("{copied}/3")),
        run: Some(copied as i64),
        outcome: outcome.into(),
        totals: ReportTotals {
            copied,
            unchanged: copied + 1,
            seconds: 1.5,
            ..Default::default()
        },
        failures: vec![format!("f{copied}")],
        registries,
        merged_from: None,
        ..Report::merged("p.toml".into(), started.into(), ended.into())
    }
}

#[test]
fn a_merge_keeps_the_span_and_the_worst_outcome_and_sums_the_rest() {
    let a = shard("partial", "2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", 1);
    let mut m = Report::merged(a.plan.clone(), a.started_at.clone(), a.ended_at.clone());
    m.merge(a, "a.json".into());
    m.merge(
        shard(
            "succeeded",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:30:00Z",
            2,
        ),
        "b.json".into(),
    );
    assert_eq!(m.started_at, "2026-01-01T01:00:00Z");
    assert_eq!(m.ended_at, "2026-01-01T03:00:00Z");
    assert_eq!(m.outcome, "partial");
    assert_eq!((m.totals.copied, m.totals.seconds), (3, 3.0));
    assert_eq!(m.totals.unchanged, 5);
    assert_eq!(m.registries["ghcr.io"].requests, 20);
    assert_eq!(m.registries["ghcr.io"].wait_seconds, 1.0);
    assert_eq!(m.failures, ["f1", "f2"]);
    assert_eq!((m.shard.as_deref(), m.run), (None, None));
    let from = m.merged_from.as_deref().unwrap();
    assert_eq!(from.len(), 2);
    assert_eq!(
        (
            from[1].report.as_str(),
            from[1].shard.as_deref(),
            from[1].run
        ),
        ("b.json", Some("2/3"), Some(2))
    );
    m.merge(
        shard(
            "interrupted",
            "2026-01-01T02:00:00Z",
            "2026-01-01T02:00:00Z",
            0,
        ),
        "c.json".into(),
    );
    assert_eq!(m.outcome, "interrupted");
    // What it writes reads back as it was.
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), m);
}
