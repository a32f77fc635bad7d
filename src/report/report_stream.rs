//! The JSON report as a stream. A run writes it as it goes ([`ReportWriter`]): the fields
//! known when it starts, each item as it finishes, then what the run's end tells. `ferry
//! report merge` reads reports item by item ([`read`], [`read_items`]). Neither holds a
//! report's items in memory. Fields are read by name, so a report written whole (items
//! between `failures` and `deletions`) reads the same as a streamed one.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::{Map, Value};

use super::budget_parked::ReportBudget;
use super::files::{
    MergedFrom, Report, ReportDeletion, ReportItem, ReportKept, ReportPackage, ReportPrune,
    ReportRegistry, ReportTotals, REPORT_VERSION,
};
use super::json_stream::{JsonStream, PrivateFile};

/// What a report says before its items: known when the run starts.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReportHead {
    pub report_version: u32,
    pub ferry_version: String,
    pub plan: String,
    /// `INDEX/COUNT` for a sharded run.
    pub shard: Option<String>,
    /// The run's id in its state file; `None` for a merged report.
    pub run: Option<i64>,
    pub started_at: String,
}

impl ReportHead {
    /// The head of a report this ferry writes.
    pub fn new(plan: String, shard: Option<String>, run: Option<i64>, started_at: String) -> Self {
        ReportHead {
            report_version: REPORT_VERSION,
            ferry_version: env!("CARGO_PKG_VERSION").to_string(),
            plan,
            shard,
            run,
            started_at,
        }
    }
}

/// What a report says after its items: [`Report`]'s other fields, in its order.
#[derive(Serialize)]
struct Tail<'a> {
    ended_at: &'a str,
    outcome: &'a str,
    totals: &'a ReportTotals,
    failures: &'a [String],
    deletions: &'a [ReportDeletion],
    #[serde(skip_serializing_if = "empty")]
    kept: &'a [ReportKept],
    #[serde(skip_serializing_if = "empty")]
    prune: &'a [ReportPrune],
    registries: &'a BTreeMap<String, ReportRegistry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merged_from: Option<&'a Vec<MergedFrom>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<&'a String>,
    #[serde(skip_serializing_if = "empty")]
    packages: &'a [ReportPackage],
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_push: Option<&'a String>,
    #[serde(skip_serializing_if = "empty")]
    pull_budget: &'a [ReportBudget],
}

fn empty<T>(list: &&[T]) -> bool {
    list.is_empty()
}

/// A report being written to its file: 0600, renamed into place when finished.
pub struct ReportWriter {
    stream: JsonStream<PrivateFile>,
}

impl ReportWriter {
    /// Begin the report at `path` with its head.
    pub fn create(path: &Path, head: &ReportHead) -> io::Result<ReportWriter> {
        let file = PrivateFile::create(path)?;
        Ok(ReportWriter {
            stream: JsonStream::begin(file, head, "items")?,
        })
    }

    /// One more item.
    pub fn item(&mut self, item: &ReportItem) -> io::Result<()> {
        self.stream.element(item)
    }

    /// End it with `report`'s fields after the items (its head and items are those written
    /// already: `report.items` is not read), and put it in place.
    pub fn finish(self, report: &Report) -> io::Result<()> {
        let tail = Tail {
            ended_at: &report.ended_at,
            outcome: &report.outcome,
            totals: &report.totals,
            failures: &report.failures,
            deletions: &report.deletions,
            kept: &report.kept,
            prune: &report.prune,
            registries: &report.registries,
            merged_from: report.merged_from.as_ref(),
            restore: report.restore.as_ref(),
            packages: &report.packages,
            metrics_push: report.metrics_push.as_ref(),
            pull_budget: &report.pull_budget,
        };
        self.stream.end(&tail)?.keep()
    }
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: report_version {found} is not one this ferry reads ({REPORT_VERSION})")]
    Version { path: PathBuf, found: Value },
    #[error("{path} is not a ferry JSON report")]
    NotAReport {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The report at `path` without its items (`items` is empty), every item read and checked
/// on the way; with how many it has.
pub fn read(path: &Path) -> Result<(Report, usize), ReadError> {
    let mut count = 0;
    let report = read_items(path, &mut |_| {
        count += 1;
        Ok(())
    })?;
    Ok((report, count))
}

/// The report at `path` without its items, each item handed to `each` as it is read, in
/// order; an error from `each` ends the reading (as [`ReadError::Io`]).
pub fn read_items(
    path: &Path,
    each: &mut dyn FnMut(ReportItem) -> io::Result<()>,
) -> Result<Report, ReadError> {
    let io_error = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(file));
    let mut seen = Seen::default();
    let visited = (&mut de).deserialize_map(Fields {
        each,
        seen: &mut seen,
    });
    let fields = match (visited, seen) {
        (
            _,
            Seen {
                version: Some(found),
                ..
            },
        ) => {
            let path = path.to_path_buf();
            return Err(ReadError::Version { path, found });
        }
        (
            _,
            Seen {
                failed: Some(e), ..
            },
        ) => return Err(io_error(e)),
        (Err(source), _) => return Err(not_a_report(path, source)),
        (Ok(fields), _) => fields,
    };
    de.end().map_err(|e| not_a_report(path, e))?;
    if !fields.contains_key("report_version") {
        let (path, found) = (path.to_path_buf(), Value::Null);
        return Err(ReadError::Version { path, found });
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| not_a_report(path, e))
}

fn not_a_report(path: &Path, source: serde_json::Error) -> ReadError {
    ReadError::NotAReport {
        path: path.to_path_buf(),
        source,
    }
}

/// Why reading stopped, when it was not the JSON: a version this ferry does not read, or
/// the item sink's error.
#[derive(Default)]
struct Seen {
    version: Option<Value>,
    failed: Option<io::Error>,
}

/// A report's fields: every one but `items` kept as a value (`items` as an empty list),
/// the items handed over one at a time.
struct Fields<'a> {
    each: &'a mut dyn FnMut(ReportItem) -> io::Result<()>,
    seen: &'a mut Seen,
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ferry JSON report")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(Items {
                    each: &mut *self.each,
                    seen: &mut *self.seen,
                })?;
                out.insert(key, Value::Array(Vec::new()));
                continue;
            }
            let value: Value = map.next_value()?;
            // The version first, so a newer report is refused as such, not as malformed.
            if key == "report_version" && value != REPORT_VERSION {
                self.seen.version = Some(value);
                return Err(de::Error::custom("report_version"));
            }
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// The `items` list, read one item at a time.
struct Items<'a> {
    each: &'a mut dyn FnMut(ReportItem) -> io::Result<()>,
    seen: &'a mut Seen,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<ReportItem>()? {
            if let Err(e) = (self.each)(item) {
                self.seen.failed = Some(e);
                return Err(de::Error::custom("writing an item"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> ReportItem {
        ReportItem {
            source: format!("a.io/x:{n}"),
            target: format!("b.io/x:{n}"),
            digest: None,
            action: "failed".into(),
            bytes: 0,
            seconds: 0.0,
            error: Some("no\nsecond line".into()),
            hint: None,
            rewritten: None,
            updated: None,
            put_back: vec!["a".into()],
        }
    }

    fn report(items: Vec<ReportItem>) -> Report {
        let mut r = Report::merged("p.toml".into(), "s".into(), "e".into());
        (r.shard, r.run, r.merged_from) = (Some("1/2".into()), Some(7), None);
        r.failures = vec!["f".into()];
        r.totals.failed = 1;
        r.restore = Some("ferry restore p.toml --run 7".into());
        r.registries
            .insert("b.io".into(), ReportRegistry::default());
        r.items = items;
        r
    }

    /// Issue 24: a report written item by item reads back as the report it is, whole or item
    /// by item; and one written whole (before issue 24) reads item by item the same.
    #[test]
    fn a_streamed_report_reads_back_whole_and_item_by_item() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let whole = report((0..3).map(item).collect());
        let head = ReportHead::new("p.toml".into(), whole.shard.clone(), whole.run, "s".into());
        let mut w = ReportWriter::create(&path, &head).unwrap();
        for i in &whole.items {
            w.item(i).unwrap();
        }
        w.finish(&report(Vec::new())).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(serde_json::from_slice::<Report>(&text).unwrap(), whole);
        let old = dir.path().join("old.json");
        std::fs::write(&old, serde_json::to_vec_pretty(&whole).unwrap()).unwrap();
        for p in [&path, &old] {
            let mut items = Vec::new();
            let read = read_items(p, &mut |i| {
                items.push(i);
                Ok(())
            })
            .unwrap();
            assert_eq!((read, items), (report(Vec::new()), whole.items.clone()));
            assert_eq!(super::read(p).unwrap().1, 3);
        }
    }

    /// A newer report is refused as such, even with items this ferry cannot read; what is not
    /// a report, as not one.
    #[test]
    fn a_newer_or_broken_report_is_refused_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"report_version": 2, "items": [{"new": true}]}"#).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("report_version 2 is not one this ferry reads (1)"),
            "{e}"
        );
        std::fs::write(&path, r#"{"items": []}"#).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("report_version null is not one this ferry reads (1)"),
            "{e}"
        );
        for broken in [
            r#"{"report_version": 1, "items": [{"source": 1}]}"#,
            "[1]",
            "{} x",
        ] {
            std::fs::write(&path, broken).unwrap();
            let e = read(&path).unwrap_err();
            assert!(matches!(e, ReadError::NotAReport { .. }), "{broken}: {e}");
        }
        let e = read_items(&dir.path().join("r.json"), &mut |_| Ok(()));
        assert!(e.is_err());
    }
}
