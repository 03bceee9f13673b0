//! # hush-client
//!
//! A thin Matrix client that drives hush's sans-I/O crypto engine over
//! HTTP (hyper + rustls): password login and session restore, a sync loop
//! that feeds the engine and persists before acknowledging, rooms with
//! their encryption state, sending that encrypts automatically, handlers that
//! receive decrypted events (or the reason they could not be decrypted), and
//! an encryption API for key export and import and device trust.
//!
//! ```no_run
//! # async fn example() -> Result<(), hush_client::ClientError> {
//! use hush_client::{Client, SyncSettings};
//!
//! let client = Client::builder()
//!     .homeserver_url("https://matrix.example.org")
//!     .redb_store("alice.redb", Some("store passphrase"))
//!     .build()?;
//! let session = client.matrix_auth().login_username("alice", "password").device_id("ALICEPHONE").send().await?;
//! // Save `session`; later: client.restore_session(session).await?
//! client.add_event_handler(|event| async move {
//!     if let Some(body) = event.text_body() {
//!         println!("{}: {body}", event.room_id);
//!     }
//! });
//! client.sync(SyncSettings::default()).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod auth;
mod backup;
mod client;
mod cross_signing;
mod driver;
mod encryption;
mod error;
mod events;
mod gossip;
mod history;
pub mod http;
mod identity_setup;
mod media;
mod persist;
mod recovery;
mod request_backoff;
mod room;
mod room_create;
mod rooms;
mod sliding_sync;
mod store;
mod store_lock;
mod sync;
mod trust;
mod verification;

pub use auth::{LoginBuilder, MatrixAuth, RegisterBuilder, Session};
pub use client::{Client, ClientBuilder, Clock};
pub use cross_signing::UserIdentity;
pub use encryption::{Device, EXPORT_ROUNDS, Encryption, IdentityKeys};
pub use error::ClientError;
pub use events::RoomEvent;
pub use history::{Direction, MAX_PAGE, Messages, MessagesOptions};
pub use hush_crypto_core;
pub use identity_setup::{IdentityNeed, IdentityOutcome, IdentitySetup, IdentityStatus, KEY_BACKUP_EVENT_TYPE};
pub use media::{AttachmentData, AttachmentError, EncryptedFile, MAX_DOWNLOAD_BYTES};
pub use recovery::{RecoveryOptions, RecoverySummary};
pub use room::{Room, SendResult, SentEncryption};
pub use room_create::{CreateRoomOptions, RoomPreset, RotationSettings};
pub use rooms::{EncryptionState, Membership, RoomEncryption, RoomState};
pub use sliding_sync::SLIDING_SYNC_ROOMS;
pub use store::StoreConfig;
#[cfg(feature = "postgres")]
pub use store::{PgDatabase, PgSettings, PostgresDatabase};
pub use store_lock::StoreLockSettings;
pub use sync::{SyncSettings, SyncSummary};
pub use trust::TrustSettings;
pub use verification::{Sas, VerificationRequest, VerificationUpdate};
