//! What the engine tells people while it works, as events: the [`Reporter`] trait. It lives
//! with the engine that calls it (as uv keeps its reporter with the resolver); `report`
//! implements it with plain lines and indicatif bars, and nothing here prints.

use super::item::Item;
use super::outcome::Outcome;
use crate::registry::transport::throttle::Event;

/// Events of a copy run.
pub trait Reporter: Send + Sync {
    /// The plan (or one stage of it) resolved to this many more images.
    fn items_selected(&self, _count: usize) {}
    fn item_started(&self, _item: &Item) {}
    fn item_finished(&self, _item: &Item, _outcome: &Outcome) {}
    /// Blob bytes streamed from a source to a target.
    fn bytes_transferred(&self, _bytes: u64) {}
    /// A wait or a retry in the registry layer: every wait is explained.
    fn registry_event(&self, _event: &Event) {}
    /// A message that belongs in the log (a skipped rule, a duplicate target).
    fn note(&self, _message: &str) {}
    /// The run is over; bars are cleared before the summary is printed.
    fn finish(&self) {}
}

/// Reports nothing (`--progress none`, tests).
pub struct Silent;
impl Reporter for Silent {}
