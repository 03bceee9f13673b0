//! Containing a bug while processing one input item: a panic inside the work
//! for one to-device event, one room event, one user's keys-query entry or
//! one imported key becomes that item's error instead of unwinding out of
//! `receive_sync_changes`, `mark_request_as_sent`, `decrypt_room_events` or
//! an import, so one hostile item can never block the rest of a sync.
//!
//! Why this is sound: the closures run pure work on values the caller owns.
//! A caller that catches a panic discards every value the closure could have
//! left half-changed (the sender's Olm sessions, the worker's account copy,
//! the room key copy) and reloads them from the store, which the panicking
//! work never wrote to. Nothing stored changes because of the failed item.
//! A build with `panic = "abort"` gets no containment (the process ends, the
//! sync token is not saved): the checked decoders are the first line.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `work`; a panic becomes `Err` with the panic's message.
pub(crate) fn contain<T>(what: &'static str, work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(what, %message, "contained a bug while processing one input item");
        format!("internal error while processing {what}: {message}")
    })
}
