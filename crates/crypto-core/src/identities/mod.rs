//! Cross-signing: user identities, their checks, our private keys, and
//! trust.
//!
//! * `keys`: [`CrossSigningPublicKey`], the checked decoder for a public
//!   cross-signing key from outside.
//! * `identity`: [`UserIdentityData`], a user's identity as we know it,
//!   checked in a keys-query answer, with its pin and violations.
//! * `private`: [`PrivateCrossSigningIdentity`], our private keys.
//! * `trust`: who is verified, as data.
//! * `view`: [`UserIdentity`], what the caller reads.

mod identity;
mod keys;
mod private;
mod trust;
mod view;

pub use identity::{IdentityState, MAX_REPLACED_MASTERS, UserIdentityData};
pub(crate) use keys::key_id_of;
pub use keys::{CrossSigningPublicKey, IdentityError, KeyRole};
pub use private::{CrossSigningKeyExport, CrossSigningStatus, ImportKeyError, PrivateCrossSigningIdentity};
pub use trust::DeviceTrust;
pub use view::{OtherUserIdentity, OwnUserIdentity, UserIdentity};

pub(crate) use identity::ListedIdentity;
pub(crate) use trust::{device_trust, identity_is_verified, is_cross_signed_by_owner, key_confusion};

use ruma_common::{OwnedDeviceId, OwnedUserId};

use crate::{signing::SignatureError, store::StoreError};

/// Why a cross-signing command failed. Nothing changed then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrossSigningError {
    /// We do not hold the private key the command needs.
    #[error("this device does not hold the {} private key", .0.name())]
    MissingPrivateKey(KeyRole),
    /// Cross-signing keys exist; bootstrapping again needs `reset`.
    #[error("cross-signing keys already exist; bootstrap with reset to replace them")]
    AlreadyBootstrapped,
    /// The server lists a cross-signing identity for us whose keys this
    /// device does not hold (another device made it): import its keys
    /// (secret storage, gossip), or bootstrap with `reset` to replace it.
    #[error("our account already has a cross-signing identity this device does not hold; import its keys or reset")]
    IdentityExists,
    /// The user's master key is not the one the caller verified (it changed
    /// in between).
    #[error("the master key of {0} is not the one that was verified")]
    MasterKeyChanged(OwnedUserId),
    /// Our own keys were not queried yet: whether the account already has an
    /// identity is unknown (drive the queue first).
    #[error("our own keys have not been queried yet; send the keys query first")]
    OwnKeysNotQueried,
    /// Our own identity is not verified on this device (we do not trust
    /// our master key), so our signatures would not make anyone verified.
    #[error("our own cross-signing identity is not verified on this device")]
    OwnIdentityNotVerified,
    /// We know no cross-signing identity for the user (query their keys).
    #[error("no cross-signing identity is known for {0}")]
    NoIdentity(OwnedUserId),
    /// The device is not known.
    #[error("device {device_id} of {user_id} is not known")]
    UnknownDevice {
        /// The owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// Only our own devices are cross-signed by us; other users' devices
    /// are trusted through their owner's identity.
    #[error("device {device_id} of {user_id} is not one of ours; verify its owner's identity instead")]
    NotOwnDevice {
        /// The owner.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// Importing private keys failed.
    #[error(transparent)]
    Import(#[from] ImportKeyError),
    /// Signing failed (cannot happen with valid ids).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
