//! [`UserIdentityData`]: a user's cross-signing identity as we know it, the
//! rules that check it in a `/keys/query` answer, and identity pinning.
//!
//! The self-signing (and, for our own user, the user-signing) key must be
//! signed by the master key, and no public key may serve in two roles. The
//! first master key seen for a user is pinned: a later, different master
//! key is a pin violation until the user acknowledges it
//! ([`pin_current_master_key`](UserIdentityData::pin_current_master_key)),
//! and if we had verified the identity, a verification violation until the
//! new one is verified or the verification withdrawn.

use ruma_common::{OwnedUserId, UserId, encryption::CrossSigningKey, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vodozemac::Ed25519PublicKey;

use super::{CrossSigningPublicKey, IdentityError, KeyRole, keys::key_id_of};

/// Where an identity stands, as the caller should treat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentityState {
    /// Verified: our own, with a trusted master key; another user's, with
    /// our user-signing key's signature on their master key.
    Verified,
    /// Not verified, and its master key is the pinned one.
    Unverified,
    /// The master key changed since it was pinned; the user has not
    /// acknowledged the change.
    PinViolation,
    /// We had verified this user, and their identity is no longer verified
    /// (the master key changed).
    VerificationViolation,
}

impl IdentityState {
    /// A pin or verification violation.
    pub fn is_violation(self) -> bool {
        matches!(self, Self::PinViolation | Self::VerificationViolation)
    }
}

/// A user's cross-signing keys as the server listed them, with what we
/// decided about them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserIdentityData {
    user_id: OwnedUserId,
    master: CrossSigningPublicKey,
    self_signing: CrossSigningPublicKey,
    /// Only our own user's is listed to us.
    user_signing: Option<CrossSigningPublicKey>,
    /// The first master key we saw, or the one the user acknowledged.
    pinned_master: Ed25519PublicKey,
    /// Our own identity: this device trusts the master key (it made or
    /// imported the private half, or the user verified it).
    master_trusted: bool,
    /// We saw this identity verified, and the user has not withdrawn it.
    previously_verified: bool,
    /// The current master key was verified (or, ours, trusted) here.
    #[serde(default)]
    current_master_verified: bool,
    /// Master keys that were verified here and then replaced (the latest
    /// [`MAX_REPLACED_MASTERS`]): such a key never counts as verified
    /// again, so a server replaying an old identity (with the signatures it
    /// once carried) cannot roll trust back to it. Only verified keys are
    /// recorded, so a server cannot push them out with made-up ones; the
    /// user verifying the key again clears its mark.
    #[serde(default)]
    replaced_masters: Vec<Ed25519PublicKey>,
    /// Our own identity: every user-signing key this device trusted (the
    /// latest [`MAX_REPLACED_MASTERS`]). Another user's master key signed by
    /// one of them was verified by us at some point, which is what decides
    /// whether its replacement is remembered, even if our own identity has
    /// changed since (a server can list a made-up identity for us first).
    #[serde(default)]
    trusted_user_signing_keys: Vec<Ed25519PublicKey>,
}

/// How many replaced master keys an identity remembers.
pub const MAX_REPLACED_MASTERS: usize = 256;

/// One user's entry in a `/keys/query` answer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ListedIdentity<'a> {
    pub(crate) master: Option<&'a Raw<CrossSigningKey>>,
    pub(crate) self_signing: Option<&'a Raw<CrossSigningKey>>,
    pub(crate) user_signing: Option<&'a Raw<CrossSigningKey>>,
}

fn parse(raw: &Raw<CrossSigningKey>, user_id: &UserId, role: KeyRole) -> Result<CrossSigningPublicKey, IdentityError> {
    let value: Value =
        raw.deserialize_as_unchecked().map_err(|e| IdentityError::Malformed { role, reason: e.to_string() })?;
    CrossSigningPublicKey::parse(value, user_id, role)
}

fn signed_by_master(
    key: CrossSigningPublicKey,
    master: &CrossSigningPublicKey,
) -> Result<CrossSigningPublicKey, IdentityError> {
    let master_key = master.key();
    key.check_signed_by(master.user_id(), &key_id_of(&master_key), &master_key)
        .map_err(|source| IdentityError::NotSignedByMaster { role: key.role(), source })?;
    Ok(key)
}

impl UserIdentityData {
    /// Checks `user_id`'s listed keys (`own`: whether the user is us, whose
    /// user-signing key is required) and merges them with what we knew.
    /// `Ok(None)`: nothing is listed, what we knew stays.
    /// `known_verified`: whether `known` (what we knew) is verified right
    /// now; if its master key is replaced, that key is remembered.
    pub(crate) fn from_listed(
        user_id: &UserId,
        listed: ListedIdentity<'_>,
        own: bool,
        known: Option<(&Self, bool)>,
    ) -> Result<Option<Self>, IdentityError> {
        let Some(master) = listed.master else {
            return match listed.self_signing.or(listed.user_signing) {
                Some(_) => Err(IdentityError::Missing { role: KeyRole::Master }),
                None => Ok(None),
            };
        };
        let master = parse(master, user_id, KeyRole::Master)?;
        let self_signing = listed.self_signing.ok_or(IdentityError::Missing { role: KeyRole::SelfSigning })?;
        let self_signing = signed_by_master(parse(self_signing, user_id, KeyRole::SelfSigning)?, &master)?;
        let user_signing = match (own, listed.user_signing) {
            (true, Some(raw)) => Some(signed_by_master(parse(raw, user_id, KeyRole::UserSigning)?, &master)?),
            (true, None) => return Err(IdentityError::Missing { role: KeyRole::UserSigning }),
            (false, _) => None,
        };
        check_distinct(&master, &self_signing, user_signing.as_ref())?;
        let fresh = Self {
            user_id: user_id.to_owned(),
            pinned_master: master.key(),
            master,
            self_signing,
            user_signing,
            master_trusted: false,
            previously_verified: false,
            current_master_verified: false,
            replaced_masters: Vec::new(),
            trusted_user_signing_keys: Vec::new(),
        };
        Ok(Some(match known {
            Some((known, verified)) => known.updated_with(fresh, verified),
            None => fresh,
        }))
    }

    /// Our own identity as we just made it (we hold every private key).
    pub(crate) fn new_own(
        master: CrossSigningPublicKey,
        self_signing: CrossSigningPublicKey,
        user_signing: CrossSigningPublicKey,
        known: Option<&Self>,
    ) -> Self {
        let fresh = Self {
            user_id: master.user_id().to_owned(),
            pinned_master: master.key(),
            master,
            self_signing,
            user_signing: Some(user_signing),
            master_trusted: true,
            previously_verified: true,
            current_master_verified: true,
            replaced_masters: Vec::new(),
            trusted_user_signing_keys: Vec::new(),
        };
        match known {
            // Our own reset: the new key is the one we trust and pin.
            Some(known) => {
                let mut own = Self {
                    replaced_masters: known.replaced_with(fresh.master.key(), true),
                    trusted_user_signing_keys: known.trusted_user_signing_keys.clone(),
                    ..fresh
                };
                own.remember_trusted_user_signing_key();
                own
            }
            None => {
                let mut own = fresh;
                own.remember_trusted_user_signing_key();
                own
            }
        }
    }

    /// `newer` keys for the same user: the pin and the decisions stay; a
    /// new master key is not trusted until verified again.
    fn updated_with(&self, newer: Self, verified: bool) -> Self {
        let same_master = newer.master.key() == self.master.key();
        Self {
            pinned_master: self.pinned_master,
            master_trusted: self.master_trusted && same_master,
            previously_verified: self.previously_verified,
            current_master_verified: self.current_master_verified && same_master,
            trusted_user_signing_keys: self.trusted_user_signing_keys.clone(),
            replaced_masters: self.replaced_with(newer.master.key(), verified),
            ..newer
        }
    }

    /// The replaced master keys once `new` is the master key: the current
    /// one is recorded if it was verified here (`verified`: as worked out
    /// now; or flagged when it was verified or trusted), whatever `new` is.
    fn replaced_with(&self, new: Ed25519PublicKey, verified: bool) -> Vec<Ed25519PublicKey> {
        let mut replaced = self.replaced_masters.clone();
        let current = self.master.key();
        let was_verified = verified || self.current_master_verified || self.master_trusted;
        if new != current && was_verified && !replaced.contains(&current) {
            replaced.push(current);
        }
        let excess = replaced.len().saturating_sub(MAX_REPLACED_MASTERS);
        replaced.drain(..excess);
        replaced
    }

    /// The user verified the current master key explicitly: it is no
    /// longer marked as replaced.
    pub(crate) fn clear_replaced_mark(&mut self) {
        let current = self.master.key();
        self.replaced_masters.retain(|key| *key != current);
    }

    /// Whether the current master key is one this user had replaced before
    /// (a rollback): it is never verified.
    pub fn is_master_replaced(&self) -> bool {
        self.replaced_masters.contains(&self.master.key())
    }

    /// The user.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The master key.
    pub fn master_key(&self) -> &CrossSigningPublicKey {
        &self.master
    }

    /// The self-signing key.
    pub fn self_signing_key(&self) -> &CrossSigningPublicKey {
        &self.self_signing
    }

    /// The user-signing key (our own identity only).
    pub fn user_signing_key(&self) -> Option<&CrossSigningPublicKey> {
        self.user_signing.as_ref()
    }

    /// The pinned master key.
    pub fn pinned_master_key(&self) -> Ed25519PublicKey {
        self.pinned_master
    }

    /// Our own identity: whether this device trusts its master key.
    pub fn is_master_trusted(&self) -> bool {
        self.master_trusted
    }

    /// Whether we saw this identity verified (and it was not withdrawn).
    pub fn was_previously_verified(&self) -> bool {
        self.previously_verified
    }

    /// Every public key of the identity, with its role.
    pub(crate) fn public_keys(&self) -> impl Iterator<Item = &CrossSigningPublicKey> {
        [Some(&self.master), Some(&self.self_signing), self.user_signing.as_ref()].into_iter().flatten()
    }

    /// The state, given whether the identity is verified right now (which
    /// depends on our own identity: see `identities::trust`).
    pub fn state(&self, verified: bool) -> IdentityState {
        if verified {
            IdentityState::Verified
        } else if self.previously_verified {
            IdentityState::VerificationViolation
        } else if self.pinned_master != self.master.key() {
            IdentityState::PinViolation
        } else {
            IdentityState::Unverified
        }
    }

    /// Accepts the current master key: the pin moves to it.
    pub(crate) fn pin_current_master_key(&mut self) {
        self.pinned_master = self.master.key();
    }

    /// Forgets that we had verified the user (ends a verification violation).
    pub(crate) fn withdraw_verification(&mut self) {
        self.previously_verified = false;
        self.pin_current_master_key();
    }

    /// The identity is verified now: remember it, and pin its master key.
    pub(crate) fn note_verified(&mut self) {
        self.previously_verified = true;
        self.current_master_verified = true;
        self.pin_current_master_key();
    }

    /// Our own identity: this device trusts the master key from now on, if
    /// `proof` covers exactly it (a verification, or holding its private
    /// key); returns whether it did.
    pub(crate) fn trust_master(&mut self, proof: &crate::verification::VerificationProof) -> bool {
        if !proof.covers_master_key(&self.user_id, self.master_key().key()) {
            return false;
        }
        self.master_trusted = true;
        self.remember_trusted_user_signing_key();
        true
    }

    fn remember_trusted_user_signing_key(&mut self) {
        let Some(key) = self.user_signing.as_ref().map(CrossSigningPublicKey::key) else { return };
        if self.master_trusted && !self.trusted_user_signing_keys.contains(&key) {
            self.trusted_user_signing_keys.push(key);
            let excess = self.trusted_user_signing_keys.len().saturating_sub(MAX_REPLACED_MASTERS);
            self.trusted_user_signing_keys.drain(..excess);
        }
    }

    /// Whether `other`'s master key carries a signature by a user-signing
    /// key this device ever trusted (we verified them at some point).
    pub(crate) fn ever_verified(&self, other: &Self) -> bool {
        self.trusted_user_signing_keys.iter().any(|key| other.master.is_signed_by(&self.user_id, key))
    }

    /// The master key with `signature` added (a verification's upload).
    pub(crate) fn master_key_mut(&mut self) -> &mut CrossSigningPublicKey {
        &mut self.master
    }
}

/// No public key in two roles (key confusion).
fn check_distinct(
    master: &CrossSigningPublicKey,
    self_signing: &CrossSigningPublicKey,
    user_signing: Option<&CrossSigningPublicKey>,
) -> Result<(), IdentityError> {
    let reused = |a: &CrossSigningPublicKey, b: &CrossSigningPublicKey| {
        (a.key() == b.key()).then_some(IdentityError::KeyReused { first: a.role(), second: b.role() })
    };
    let mut pairs = vec![(master, self_signing)];
    if let Some(user_signing) = user_signing {
        pairs.push((master, user_signing));
        pairs.push((self_signing, user_signing));
    }
    match pairs.into_iter().find_map(|(a, b)| reused(a, b)) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
