//! [`UserIdentity`]: a user's identity as the caller reads it, its trust
//! worked out. The commands that change it (verify, withdraw, pin) are on
//! `OlmMachine`, which queues what they need sent.

use ruma_common::UserId;
use vodozemac::Ed25519PublicKey;

use super::{IdentityState, UserIdentityData, identity_is_verified};

/// Our own identity.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnUserIdentity {
    data: UserIdentityData,
    state: IdentityState,
}

/// Another user's identity.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherUserIdentity {
    data: UserIdentityData,
    state: IdentityState,
}

/// A user's cross-signing identity.
#[derive(Clone, Debug, PartialEq)]
pub enum UserIdentity {
    /// Ours.
    Own(OwnUserIdentity),
    /// Someone else's.
    Other(OtherUserIdentity),
}

impl UserIdentity {
    /// `data`'s view, given our own identity.
    pub(crate) fn new(data: UserIdentityData, own: Option<&UserIdentityData>) -> Self {
        let state = data.state(identity_is_verified(&data, own));
        match own {
            Some(own) if own.user_id() == data.user_id() => Self::Own(OwnUserIdentity { data, state }),
            _ => Self::Other(OtherUserIdentity { data, state }),
        }
    }

    fn parts(&self) -> (&UserIdentityData, IdentityState) {
        match self {
            Self::Own(own) => (&own.data, own.state),
            Self::Other(other) => (&other.data, other.state),
        }
    }

    /// The user.
    pub fn user_id(&self) -> &UserId {
        self.parts().0.user_id()
    }

    /// The master key.
    pub fn master_key(&self) -> Ed25519PublicKey {
        self.parts().0.master_key().key()
    }

    /// The self-signing key.
    pub fn self_signing_key(&self) -> Ed25519PublicKey {
        self.parts().0.self_signing_key().key()
    }

    /// Where it stands.
    pub fn state(&self) -> IdentityState {
        self.parts().1
    }

    /// Whether it is verified.
    pub fn is_verified(&self) -> bool {
        self.state() == IdentityState::Verified
    }

    /// Whether its master key changed since it was pinned, unacknowledged:
    /// true in [`IdentityState::PinViolation`], and also in a
    /// [`IdentityState::VerificationViolation`] (the state names the more
    /// serious of the two), as matrix-sdk-crypto's
    /// `identity_needs_user_approval` does.
    pub fn has_pin_violation(&self) -> bool {
        let data = self.parts().0;
        !self.is_verified() && data.pinned_master_key() != data.master_key().key()
    }

    /// Whether we had verified it and it is no longer verified.
    pub fn has_verification_violation(&self) -> bool {
        self.state() == IdentityState::VerificationViolation
    }

    /// The data underneath.
    pub fn data(&self) -> &UserIdentityData {
        self.parts().0
    }
}

impl OwnUserIdentity {
    /// Whether this device trusts our master key.
    pub fn is_verified(&self) -> bool {
        self.state == IdentityState::Verified
    }

    /// The user-signing key's public half.
    pub fn user_signing_key(&self) -> Option<Ed25519PublicKey> {
        self.data.user_signing_key().map(|key| key.key())
    }
}

impl OtherUserIdentity {
    /// Whether our user-signing key signed their master key (and our own
    /// identity is verified).
    pub fn is_verified(&self) -> bool {
        self.state == IdentityState::Verified
    }
}
