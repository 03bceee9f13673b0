//! Room events as handlers receive them, and the handler registry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hush_crypto_core::{MegolmDecryptionInfo, MegolmError, UtdCause};
use ruma_common::OwnedRoomId;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A timeline event delivered to handlers.
#[derive(Clone)]
pub struct RoomEvent {
    /// The room it was sent in.
    pub room_id: OwnedRoomId,
    /// The event: decrypted if it was encrypted and could be decrypted,
    /// otherwise as received.
    pub event: Value,
    /// Who sent it and how far they are trusted, for decrypted events.
    pub encryption: Option<MegolmDecryptionInfo>,
    /// Why it could not be decrypted, for events that stay encrypted.
    pub unable_to_decrypt: Option<MegolmError>,
    /// The same failure explained, as data an application can show and
    /// count: sent before we joined, withheld by the sender, older than
    /// this device, the key lost or late in transit...
    pub utd_cause: Option<UtdCause>,
    /// The event was delivered before as undecryptable and is now decrypted
    /// because its key arrived later.
    pub late_decryption: bool,
}

impl RoomEvent {
    /// The event's type.
    pub fn event_type(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }

    /// The event as one of ruma's event types (e.g. `OriginalSyncRoomMessageEvent`).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.event.clone())
    }

    /// The event's `m.text` body, if it is a text message.
    pub fn text_body(&self) -> Option<&str> {
        (self.event_type() == "m.room.message").then(|| self.event["content"]["body"].as_str()).flatten()
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A registered event handler.
pub(crate) type Handler = Arc<dyn Fn(RoomEvent) -> HandlerFuture + Send + Sync>;

pub(crate) fn boxed<F, Fut>(handler: F) -> Handler
where
    F: Fn(RoomEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |event| Box::pin(handler(event)))
}

impl std::fmt::Debug for RoomEvent {
    /// The event's type and sender, never a decrypted event's content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let content: &dyn std::fmt::Debug =
            if self.encryption.is_some() { &"(decrypted content redacted)" } else { &self.event["content"] };
        f.debug_struct("RoomEvent")
            .field("room_id", &self.room_id)
            .field("type", &self.event["type"])
            .field("sender", &self.event["sender"])
            .field("content", content)
            .field("encryption", &self.encryption)
            .field("unable_to_decrypt", &self.unable_to_decrypt)
            .field("utd_cause", &self.utd_cause)
            .field("late_decryption", &self.late_decryption)
            .finish()
    }
}

impl RoomEvent {
    /// The encrypted file a decrypted `m.file` / `m.image` / `m.video` /
    /// `m.audio` message carries, for [`Client::download`](crate::Client::download).
    pub fn encrypted_file(&self) -> Option<crate::EncryptedFile> {
        if self.event_type() != "m.room.message" {
            return None;
        }
        serde_json::from_value(self.event["content"]["file"].clone()).ok()
    }
}
