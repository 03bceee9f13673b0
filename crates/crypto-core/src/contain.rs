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

/// A serde error about decrypted (secret) JSON, without the input it may
/// quote: "invalid type: string \"…\"" keeps only "invalid type". A missing
/// field names only our own schema's field and is kept whole.
pub(crate) fn secret_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.starts_with("missing field") {
        return message;
    }
    let cut = message.find([':', '`', '"']).unwrap_or(message.len());
    format!("{} (details withheld: the input is secret)", message[..cut].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_json_errors_do_not_quote_the_input() {
        let error = serde_json::from_str::<u8>("\"my secret\"").unwrap_err();
        assert!(error.to_string().contains("my secret"));
        assert!(!secret_json_error(&error).contains("my secret"));
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        enum Kind {
            A,
        }
        let error = serde_json::from_str::<Kind>("\"hunter2\"").unwrap_err();
        assert!(!secret_json_error(&error).contains("hunter2"));
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Needs {
            sender: String,
        }
        let error = serde_json::from_str::<Needs>("{}").unwrap_err();
        assert_eq!(secret_json_error(&error), error.to_string());
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let result: Result<(), String> = contain("a test item", || panic!("boom"));
        assert!(result.unwrap_err().contains("boom"));
    }
}
