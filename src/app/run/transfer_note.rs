//! The run's closing note on what resuming and a fan-out's one read saved and cost.

use indicatif::HumanBytes;

use crate::report::plural;

/// What resuming and a fan-out's one read saved and cost, when they did anything.
pub(super) fn transfer_note(t: &crate::copy::TransferTotals) -> Option<String> {
    let mut parts = Vec::new();
    if t.resumed_bytes > 0 {
        parts.push(format!(
            "{} already at the target from an earlier run",
            HumanBytes(t.resumed_bytes)
        ));
    }
    if t.spooled_bytes > 0 {
        parts.push(format!(
            "{} sent from the spool",
            HumanBytes(t.spooled_bytes)
        ));
    }
    if t.reread_bytes > 0 {
        parts.push(format!(
            "{} read again (a source answered a range request with the whole blob)",
            HumanBytes(t.reread_bytes)
        ));
    }
    if t.parked > 0 {
        parts.push(format!(
            "{} parked for the next run",
            plural(t.parked as usize, "upload")
        ));
    }
    let mut note = (!parts.is_empty()).then(|| format!("resume: {}", parts.join("; ")));
    if t.fanout_spooled_blobs + t.fanout_reread_blobs > 0 {
        let fanout = format!(
            "fan-out: {} read once for every target, {} read again (no room in the spool)",
            plural(t.fanout_spooled_blobs as usize, "blob"),
            t.fanout_reread_blobs
        );
        note = Some(note.map_or(fanout.clone(), |n| format!("{n}\n{fanout}")));
    }
    note
}
