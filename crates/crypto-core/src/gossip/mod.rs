//! Sharing secrets and room keys between one's own devices: `m.secret.request`
//! / `m.secret.send` and `m.room_key_request` / `m.forwarded_room_key`.
//!
//! This module owns the rules, as pure functions: the shapes of the events
//! (every field from outside checked and bounded), the requests we have
//! outstanding (persisted), who may be answered and whose answer is taken.
//! The engine (`machine/gossip.rs`) routes sync events here and sends what
//! the rules decide: `policy` judges who may ask and answer, `budget`
//! bounds how many requests one sync handles, per device of ours, counted
//! only once the sender is checked, `answers` keeps the answers that could
//! not go out yet, `resend` says when our open requests are sent again.
//!
//! The rules, against the attacks published on Matrix clients (Albrecht et
//! al., "Practically-exploitable cryptographic vulnerabilities in Matrix",
//! IEEE S&P 2023):
//! - we answer only our own user's devices that we have verified, and only
//!   over Olm, so the answer is readable by that device alone;
//! - we take a secret or a forwarded key only over Olm, from our own
//!   verified device, in answer to a request we made and still have open;
//! - a secret is checked against its public part before it is used (the
//!   cross-signing keys against our published identity, the backup key
//!   against the backup's public key);
//! - a forwarded key is never authenticated (its sender's keys are only
//!   claimed by the forwarder), never replaces an authenticated or
//!   differently owned key, and is marked [`KeySource::Forwarded`](crate::KeySource::Forwarded).

pub mod answers;
pub mod budget;
mod content;
mod error;
mod policy;
mod requests;
pub mod resend;

pub(crate) use answers::{Answer, Asked, KeptAnswers};
pub use budget::RequestBudget;
pub use content::{ForwardedRoomKey, GossipAction, IncomingKeyRequest, IncomingSecretRequest, SecretSend};
pub(crate) use content::{forwarded_key_content, key_request_content, secret_request_content, secret_send_content};
pub use error::GossipError;
pub(crate) use policy::{Counterpart, judge_own_device};
pub(crate) use requests::{GOSSIP_RECORD, GossipRequests};
pub use requests::{GossipKind, GossipRequest};
pub(crate) use resend::ResendClock;

/// The event type of a secret request (and its cancellation).
pub const SECRET_REQUEST: &str = "m.secret.request";
/// The event type of a secret sent in answer.
pub const SECRET_SEND: &str = "m.secret.send";
/// The event type of a room-key request (and its cancellation).
pub const ROOM_KEY_REQUEST: &str = "m.room_key_request";
/// The event type of a room key forwarded in answer.
pub const FORWARDED_ROOM_KEY: &str = "m.forwarded_room_key";
