//! [`Changes`]: everything one input changed, saved in one atomic batch.

use ruma_common::OwnedUserId;

use super::types::{
    MessageIndexRecord, OlmMessageHash, RoomKeyRef, StoredAccount, StoredSecret, StoredSession, TrackedUser,
};
use crate::{
    devices::DeviceData,
    identities::{PrivateCrossSigningIdentity, UserIdentityData},
    megolm::{RoomKeyShareRecord, StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
};

/// Everything one input to the machine changed. A store applies a `Changes`
/// value entirely or not at all, before the input's call returns.
#[derive(Debug, Default)]
pub struct Changes {
    /// The account, if it changed (keys generated, published, used).
    pub account: Option<StoredAccount>,
    /// Olm sessions created or advanced.
    pub sessions: Vec<StoredSession>,
    /// Devices added or updated (including ones marked deleted).
    pub devices: Vec<DeviceData>,
    /// Users newly tracked or whose dirty flag changed.
    pub tracked_users: Vec<TrackedUser>,
    /// Users no longer tracked.
    pub untracked_users: Vec<OwnedUserId>,
    /// Room keys received, imported or created.
    pub inbound_group_sessions: Vec<StoredInboundGroupSession>,
    /// Our outbound room keys, created, advanced or shared further.
    pub outbound_group_sessions: Vec<StoredOutboundGroupSession>,
    /// Acknowledged shares of our room keys, one row per device: the store
    /// adds them to the outbound session's maps when it loads the session.
    pub room_key_shares: Vec<RoomKeyShareRecord>,
    /// Withheld notices received.
    pub withheld: Vec<WithheldInfo>,
    /// Megolm message indices decrypted, for replay detection (a record
    /// replaces an earlier one for the same index).
    pub message_indices: Vec<MessageIndexRecord>,
    /// Hashes of Olm messages decrypted, so a redelivered message is
    /// recognised and dropped instead of being taken for a wedged session.
    pub olm_message_hashes: Vec<OlmMessageHash>,
    /// Small named values saved with the batch: the engine's persisted timer
    /// state, and state an embedder (e.g. hush-client's room list) must keep
    /// atomically with the sync token. A later value for a name replaces it.
    pub custom_values: Vec<(String, Vec<u8>)>,
    /// The sync token of the sync whose changes these are.
    pub next_batch_token: Option<String>,
    /// Cross-signing identities learnt or changed (by user).
    pub identities: Vec<UserIdentityData>,
    /// Our cross-signing private keys, replacing what was stored.
    pub private_identity: Option<PrivateCrossSigningIdentity>,
    /// Whether to empty the backup queue (a backup was turned off or
    /// replaced). Applied before `backed_up` and `backup_queue`.
    pub clear_backup_queue: bool,
    /// Room keys uploaded to the backup: removed from the queue. Applied
    /// before `backup_queue`.
    pub backed_up: Vec<RoomKeyRef>,
    /// Room keys to upload to the backup: added to the queue, in the same
    /// batch as the keys themselves, so a key is never stored without being
    /// queued.
    pub backup_queue: Vec<RoomKeyRef>,
    /// Secrets saved or deleted.
    pub secrets: Vec<StoredSecret>,
    /// The lease this batch is written under, if the store is shared
    /// through its lock: the store writes nothing and answers
    /// [`StoreError::LockLost`](super::StoreError::LockLost) unless the
    /// lease is still held (see [`super::lock`]). Not a change itself.
    pub fence: Option<super::LockFence>,
}

impl Changes {
    /// Whether nothing changed. Destructures the struct so that a new field
    /// cannot be forgotten here.
    pub fn is_empty(&self) -> bool {
        let Self {
            account,
            sessions,
            devices,
            tracked_users,
            untracked_users,
            inbound_group_sessions,
            outbound_group_sessions,
            room_key_shares,
            withheld,
            message_indices,
            olm_message_hashes,
            custom_values,
            next_batch_token,
            identities,
            private_identity,
            clear_backup_queue,
            backed_up,
            backup_queue,
            secrets,
            fence: _,
        } = self;
        account.is_none()
            && sessions.is_empty()
            && devices.is_empty()
            && tracked_users.is_empty()
            && untracked_users.is_empty()
            && inbound_group_sessions.is_empty()
            && outbound_group_sessions.is_empty()
            && room_key_shares.is_empty()
            && withheld.is_empty()
            && message_indices.is_empty()
            && olm_message_hashes.is_empty()
            && custom_values.is_empty()
            && next_batch_token.is_none()
            && identities.is_empty()
            && private_identity.is_none()
            && !clear_backup_queue
            && backed_up.is_empty()
            && backup_queue.is_empty()
            && secrets.is_empty()
    }

    /// Appends `other`; where both set a single value, `other` wins.
    pub fn extend(&mut self, other: Self) {
        let Self {
            account,
            sessions,
            devices,
            tracked_users,
            untracked_users,
            inbound_group_sessions,
            outbound_group_sessions,
            room_key_shares,
            withheld,
            message_indices,
            olm_message_hashes,
            custom_values,
            next_batch_token,
            identities,
            private_identity,
            clear_backup_queue,
            backed_up,
            backup_queue,
            secrets,
            fence,
        } = other;
        if account.is_some() {
            self.account = account;
        }
        if fence.is_some() {
            self.fence = fence;
        }
        self.sessions.extend(sessions);
        self.inbound_group_sessions.extend(inbound_group_sessions);
        self.outbound_group_sessions.extend(outbound_group_sessions);
        self.room_key_shares.extend(room_key_shares);
        self.withheld.extend(withheld);
        self.message_indices.extend(message_indices);
        self.olm_message_hashes.extend(olm_message_hashes);
        self.custom_values.extend(custom_values);
        self.devices.extend(devices);
        self.tracked_users.extend(tracked_users);
        self.untracked_users.extend(untracked_users);
        if next_batch_token.is_some() {
            self.next_batch_token = next_batch_token;
        }
        self.identities.extend(identities);
        if private_identity.is_some() {
            self.private_identity = private_identity;
        }
        if clear_backup_queue {
            // A clear wipes what this batch queued or removed before it.
            self.clear_backup_queue = true;
            self.backed_up.clear();
            self.backup_queue.clear();
        }
        self.backed_up.extend(backed_up);
        self.backup_queue.extend(backup_queue);
        self.secrets.extend(secrets);
    }
}

#[cfg(test)]
mod tests {
    use ruma_common::owned_user_id;

    use super::*;

    #[test]
    fn empty_until_something_is_set() {
        let mut changes = Changes::default();
        assert!(changes.is_empty());
        changes.untracked_users.push(owned_user_id!("@a:b.c"));
        assert!(!changes.is_empty());
        let mut other = Changes { next_batch_token: Some("t".into()), ..Default::default() };
        other.extend(changes);
        assert_eq!(other.untracked_users.len(), 1);
        assert_eq!(other.next_batch_token.as_deref(), Some("t"));
    }
}
