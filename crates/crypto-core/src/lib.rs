//! # hush-crypto-core
//!
//! The sans-I/O end-to-end encryption engine of hush, a Matrix E2EE SDK.
//!
//! [`OlmMachine`] holds one device's Olm account, its sessions with other
//! devices and what it knows of those devices. It performs no I/O: it emits
//! typed [`OutgoingRequest`]s, consumes their responses and each sync's
//! changes, and saves every change through a [`CryptoStore`] in one atomic
//! batch per input. Time is an input ([`Timestamp`]); nothing here reads a clock.
//!
//! See the [`OlmMachine`] documentation for the map of its methods, the
//! drain rule of its request queue, its [`EngineEvent`]s and its timers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backup;
mod contain;
pub mod devices;
mod events;
pub mod export;
pub mod gossip;
pub mod identities;
pub mod keys;
mod machine;
pub mod megolm;
pub mod olm;
mod parallel;
mod primitives;
mod requests;
pub mod secret_storage;
mod signing;
pub mod store;
mod time;
pub mod utd;
pub mod verification;

pub use devices::{DeviceData, DeviceKeysError, LocalTrust};
pub use events::{DeviceChanges, EngineEvent, LateDecryption, RoomKeyInfo};
pub use machine::{
    BackupError, BackupKeyRecovery, DecryptedRoomEvent, DeviceListChanges, ImportError, MegolmDecryptionInfo,
    OlmDecryptionInfo, OlmMachine, OneTimeKeyCounts, OpenError, RecoveredSecrets, RecoveryError, RoomInfo,
    RoomKeyImportResult, RoomReadiness, StoreLockOutcome, SyncChanges, SyncOutput, TO_DEVICE_BATCH, ToDeviceEncryption,
    ToDeviceOutcome, VerificationState,
};
pub use megolm::{
    DecryptionSettings, EncryptError, EncryptionMerge, EncryptionSettings, KeySource, MEGOLM_ALGORITHM, MegolmError,
    Membership, RoomEncryption, RotationReason, ShareError, SharingStrategy, TrustRequirement, WithheldCode,
    WithheldInfo, key_recipients,
};
pub use olm::{OLM_ALGORITHM, OlmEncryptionError, OlmError};
pub use requests::{
    AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest, RequestRefusal, ResponseError, RoomMessageRequest,
};
pub use signing::SignatureError;
pub use store::{Changes, CryptoStore, MemoryStore, StoreError};
pub use time::Timestamp;
pub use utd::{BackupAvailability, MembershipAtEvent, UtdCause};

/// Re-exports of the ruma, vodozemac and zeroize crates whose types appear in this API.
pub mod deps {
    pub use ruma_client_api;
    pub use ruma_common;
    pub use ruma_events;
    pub use vodozemac;
    pub use zeroize;
}
