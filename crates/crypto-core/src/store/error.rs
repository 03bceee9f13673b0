//! Errors a [`CryptoStore`](super::CryptoStore) reports.

/// A storage failure. Store errors are never caused by a peer; they abort the
/// input that needed the store, and nothing of that input is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A stored value could not be encoded or decoded.
    #[error("stored {what} could not be (de)serialized: {reason}")]
    Serialization {
        /// What kind of value failed (account, session, device ...).
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// The backend failed (I/O error, transaction aborted, ...).
    #[error("store backend failed: {0}")]
    Backend(String),
    /// The store file is damaged: a value failed its integrity check or is truncated.
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// The passphrase (or raw key) does not open this store.
    #[error("the passphrase does not open this store")]
    WrongPassphrase,
    /// The store is encrypted and was opened without a passphrase or key.
    #[error("the store is encrypted: open it with its passphrase or key")]
    PassphraseRequired,
    /// A passphrase or key was given for a store that is not encrypted.
    #[error("the store is not encrypted, but a passphrase or key was given")]
    NotEncrypted,
    /// The store belongs to another user or device: the one error for it,
    /// whether the store's own header or the account in it tells.
    #[error(
        "the store belongs to {store_user_id} / {store_device_id}, not {user_id} / {device_id}; \
         use the store created for this device, or log in again with device id {store_device_id}"
    )]
    AccountMismatch {
        /// The user the store belongs to.
        store_user_id: ruma_common::OwnedUserId,
        /// The device the store belongs to.
        store_device_id: ruma_common::OwnedDeviceId,
        /// The user it was opened for.
        user_id: ruma_common::OwnedUserId,
        /// The device it was opened for.
        device_id: ruma_common::OwnedDeviceId,
    },
    /// A PBKDF2 round count outside the documented bounds: refused when a
    /// store is created with it, or when a store's header asks for it.
    #[error("the store's PBKDF2 round count {rounds} is outside {min}..={max}")]
    InvalidKdfRounds {
        /// The count asked for.
        rounds: u32,
        /// The least allowed.
        min: u32,
        /// The most allowed.
        max: u32,
    },
    /// The store lock is held by someone else, whose lease has not ended.
    #[error("the store is locked by {holder} until {expires_at:?}")]
    LockHeld {
        /// Who holds it.
        holder: String,
        /// When its lease ends, unless renewed.
        expires_at: crate::Timestamp,
    },
    /// A batch was written under a lease that is no longer held: someone
    /// else took the lock (its lease ran out), so this holder's state may
    /// be stale. Nothing of the batch was written.
    #[error(
        "the store lock was lost: it is at generation {generation} (held by {holder}), the batch was fenced with {fenced}"
    )]
    LockLost {
        /// Who holds the lock now (empty if nobody ever took it).
        holder: String,
        /// Its generation now.
        generation: u64,
        /// The generation the batch was written for.
        fenced: u64,
    },
    /// This engine shares its store through the lock and does not hold it
    /// with enough of its lease left to let anything leave (an encrypted
    /// event, a queued request): it was never taken, was let go, was lost
    /// to another holder, or ends within a third of the lease. Whatever
    /// leaves must be made under a lease that still runs when it reaches
    /// the server; take or renew the lock (`OlmMachine::lock_store`, or
    /// `renew_store_lock` for work already running) first.
    #[error("the store lock is not held with enough lease left to send (lease ends at {expires_at:?}, now {now:?})")]
    LockNotHeld {
        /// When the lease this engine held ends, if it holds one.
        expires_at: Option<crate::Timestamp>,
        /// The `now` of the refused call.
        now: crate::Timestamp,
    },
    /// The store was written by a newer version of hush.
    #[error("store schema version {found} is newer than the supported version {supported}")]
    UnsupportedSchema {
        /// The version found in the store.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
}

impl StoreError {
    /// A serialization failure of the named kind of value.
    pub fn serialization(what: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Serialization { what, reason: error.to_string() }
    }
}
