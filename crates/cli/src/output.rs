//! Printing: a line for people on a terminal, or one JSON object per line
//! with `--json` (and for `listen` and `history` events).

use hush_client::RoomEvent;
use hush_client::hush_crypto_core::{KeySource, VerificationState};
use serde_json::{Value, json};

/// How results are printed.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    /// One JSON object per line instead of text.
    pub(crate) json: bool,
}

impl Output {
    /// Prints `human` as text, or `data` as one JSON line.
    pub(crate) fn print(&self, human: impl std::fmt::Display, data: Value) {
        if self.json {
            println!("{data}");
        } else {
            println!("{human}");
        }
    }
}

fn verification(state: &VerificationState) -> &'static str {
    match state {
        VerificationState::Verified => "verified",
        VerificationState::Unverified => "unverified",
        VerificationState::UnknownDevice => "unknown_device",
        VerificationState::KeyMismatch => "key_mismatch",
        VerificationState::UnauthenticatedSource => "unauthenticated_source",
    }
}

fn key_source(source: &KeySource) -> &'static str {
    match source {
        KeySource::Own => "own",
        KeySource::Olm => "olm",
        KeySource::Imported => "imported",
        KeySource::Backup => "backup",
        KeySource::Forwarded => "forwarded",
    }
}

/// One room event as JSON: who sent it from which device, its body (or
/// why it could not be decrypted), the sender's verification state and
/// where our copy of the key came from.
pub(crate) fn event_json(event: &RoomEvent) -> Value {
    let content = &event.event["content"];
    let mut out = json!({
        "room_id": event.room_id,
        "event_id": event.event["event_id"],
        "sender": event.event["sender"],
        "origin_server_ts": event.event["origin_server_ts"],
        "type": event.event_type(),
        "encrypted": event.encryption.is_some() || event.unable_to_decrypt.is_some(),
        "late_decryption": event.late_decryption,
    });
    if event.event_type() == "m.room.message" {
        out["msgtype"] = content["msgtype"].clone();
        out["body"] = content["body"].clone();
        if let Some(file) = event.encrypted_file() {
            out["file"] = json!({"name": content["body"], "size": content["info"]["size"], "url": file.url});
        }
    }
    if let Some(info) = &event.encryption {
        out["device"] = json!(info.sender_device);
        out["verification_state"] = json!(verification(&info.verification_state));
        out["key_source"] = json!(key_source(&info.key_source));
    }
    if let Some(reason) = &event.unable_to_decrypt {
        out["device"] = content["device_id"].clone();
        out["utd_reason"] = json!(reason.to_string());
        out["utd_cause"] = json!(event.utd_cause.as_ref().map(|c| c.name()));
    }
    out
}

/// `text` with control characters (escape sequences a hostile sender or
/// server could use to rewrite the terminal) shown as `\u{..}`.
pub(crate) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// One room event as a line of text (for a terminal: control characters escaped).
pub(crate) fn event_line(event: &RoomEvent) -> String {
    printable(&raw_event_line(event))
}

fn raw_event_line(event: &RoomEvent) -> String {
    let sender = event.event["sender"].as_str().unwrap_or("?");
    if let Some(reason) = &event.unable_to_decrypt {
        let cause = event.utd_cause.as_ref().map(|c| format!(" ({})", c.name().replace('_', " "))).unwrap_or_default();
        return format!("{sender}: ** unable to decrypt{cause}: {reason} **");
    }
    let trust = event.encryption.as_ref().map(|i| format!(" [{}]", verification(&i.verification_state)));
    let late = if event.late_decryption { " (late)" } else { "" };
    let body = match event.event_type() {
        "m.room.message" => event.event["content"]["body"].as_str().unwrap_or_default().to_owned(),
        other => format!("<{other}>"),
    };
    format!("{sender}{}{late}: {body}", trust.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a message body carrying terminal escape sequences (to clear
    /// the screen, fake earlier lines or set the window title).
    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("hi\u{1b}[2J\u{7}there"), "hi\\u{1b}[2J\\u{7}there");
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
    }
}
