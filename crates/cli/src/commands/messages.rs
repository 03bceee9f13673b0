//! `send`, `listen`, `history`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hush_client::{AttachmentData, Client, MessagesOptions, RoomEvent, SyncSettings};
use serde_json::json;

use super::{known_room, room_id};
use crate::error::CliError;
use crate::output::{Output, event_json, event_line};

/// The longest one sync of `listen` waits for news.
const LISTEN_POLL: Duration = Duration::from_secs(30);

pub(crate) async fn send(
    client: &Client,
    room: &str,
    text: Option<String>,
    file: Option<PathBuf>,
    mime: &str,
    output: Output,
) -> Result<(), CliError> {
    let room = known_room(client, room).await?;
    let sent = match file {
        Some(path) => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
            if !path.is_file() {
                return Err(CliError::Usage(format!("{} is not a file", path.display())));
            }
            room.send_attachment(&name, mime, AttachmentData::File(path)).await?
        }
        None => {
            let text = match text {
                Some(text) => text,
                None => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    text.trim_end_matches('\n').to_owned()
                }
            };
            room.send_text(&text).await?
        }
    };
    let session = sent.encryption.as_ref().map(|e| e.session_id.clone());
    output.print(&sent.event_id, json!({"event_id": sent.event_id, "room_id": room.room_id(), "session_id": session}));
    Ok(())
}

fn wanted(event: &RoomEvent, room: Option<&ruma_common::OwnedRoomId>) -> bool {
    event.event.get("state_key").is_none() && room.is_none_or(|r| *r == event.room_id)
}

pub(crate) async fn listen(
    client: &Client,
    room: Option<&str>,
    count: Option<usize>,
    timeout: Option<u64>,
    save_files: Option<PathBuf>,
    output: Output,
) -> Result<(), CliError> {
    let room = room.map(room_id).transpose()?;
    if let Some(dir) = &save_files {
        std::fs::create_dir_all(dir)?;
    }
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    client.add_event_handler(move |event: RoomEvent| {
        let sender = sender.clone();
        async move {
            let _ = sender.send(event);
        }
    });
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut printed = 0;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) || count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        let poll = left.map_or(LISTEN_POLL, |l| l.min(LISTEN_POLL));
        tokio::select! {
            result = client.sync_once(SyncSettings::default().timeout(poll)) => { result?; }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // Every event of a sync is printed, even past --count: the sync's
        // token is stored, so an event left out would never be shown.
        while let Ok(event) = events.try_recv() {
            if !wanted(&event, room.as_ref()) {
                continue;
            }
            let mut json = event_json(&event);
            if let (Some(dir), Some(file)) = (&save_files, event.encrypted_file()) {
                // One file that cannot be saved (a wrong hash, a missing
                // upload) is reported with its event; listening goes on.
                match save_file(client, dir, &event, &file).await {
                    Ok(path) => json["file"]["saved_to"] = json!(path),
                    Err(error) => json["file"]["error"] = json!(error.message()),
                }
            }
            output.print(event_line(&event), json);
            printed += 1;
        }
    }
}

/// Downloads, checks and decrypts an attachment into a new file in `dir`
/// (never over an existing file or through a symlink).
async fn save_file(
    client: &Client,
    dir: &Path,
    event: &RoomEvent,
    file: &hush_client::EncryptedFile,
) -> Result<PathBuf, CliError> {
    let path = save_path(dir, event);
    let out = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    match client.download_to(file, out).await {
        Ok(_) => Ok(path),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Err(error.into())
        }
    }
}

/// `<dir>/<event id>-<name>`: only letters, digits, `-`, `_` and `.`
/// (no path separators, no leading dot), each part at most 100 bytes.
fn save_path(dir: &Path, event: &RoomEvent) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .take(100)
            .collect::<String>()
            .trim_start_matches('.')
            .to_owned()
    };
    let name = event.event["content"]["body"].as_str().unwrap_or("file");
    let id = event.event["event_id"].as_str().unwrap_or("event");
    dir.join(format!("{}-{}", clean(id), clean(name)))
}

pub(crate) async fn history(client: &Client, room: &str, limit: u32, output: Output) -> Result<(), CliError> {
    let room = known_room(client, room).await?;
    let page = room.messages(MessagesOptions::backward().limit(limit)).await?;
    for event in page.chunk.iter().rev().filter(|e| e.event.get("state_key").is_none()) {
        output.print(event_line(event), event_json(event));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a sender names an attachment (or a server an event id) so
    /// that saving it would write outside the directory or a hidden file.
    #[test]
    fn saved_files_stay_in_their_directory() {
        let dir = Path::new("/tmp/saved");
        for (id, name) in
            [("$e1", "../../etc/passwd"), ("$../x", ".bashrc"), ("$e2", &"x".repeat(5000)), ("$e3", "/abs")]
        {
            let event = RoomEvent {
                room_id: "!r:e.org".try_into().unwrap(),
                event: json!({"event_id": id, "content": {"body": name}}),
                encryption: None,
                unable_to_decrypt: None,
                utd_cause: None,
                late_decryption: false,
            };
            let path = save_path(dir, &event);
            assert_eq!(path.parent(), Some(dir), "{name}");
            let file = path.file_name().unwrap().to_str().unwrap();
            assert!(!file.starts_with('.') && !file.contains('/') && file.len() <= 201, "{file}");
        }
    }
}
