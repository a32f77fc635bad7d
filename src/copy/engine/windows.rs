//! The engine's windows of blob transfers, one per target registry (see `window`).

use std::sync::Arc;

use super::window::Window;
use super::Engine;

impl Engine {
    /// Each target registry's window of blob transfers: where it is, and the widest it was.
    pub fn windows(&self) -> Vec<(String, usize, usize)> {
        let mut out: Vec<(String, usize, usize)> = self
            .windows
            .lock()
            .expect("windows")
            .iter()
            .map(|(name, w)| {
                let (now, peak) = w.size();
                (name.clone(), now, peak)
            })
            .collect();
        out.sort();
        out
    }

    pub(super) fn window(&self, registry: &str) -> Arc<Window> {
        self.windows
            .lock()
            .expect("windows")
            .entry(registry.to_string())
            .or_insert_with(|| Window::new(self.window_start, self.concurrency))
            .clone()
    }
}
