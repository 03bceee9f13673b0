//! Routing for cross-signing (`identities/`): bootstrapping our keys, the
//! signing-keys and signature uploads, importing private keys, and the
//! commands that verify, pin or withdraw. The rules are in `identities/`;
//! this module loads what they need, collects the changes, saves them and
//! queues the requests.

use std::collections::BTreeMap;

use ruma_client_api::keys::{upload_signatures, upload_signing_keys};
use ruma_common::{DeviceId, OwnedUserId, UserId, serde::Raw};
use serde_json::Value;

use super::{OlmMachine, lock};
use crate::{
    AnyOutgoingRequest, OutgoingRequest,
    events::EngineEvent,
    identities::{
        CrossSigningError, CrossSigningKeyExport, CrossSigningPublicKey, CrossSigningStatus, DeviceTrust,
        IdentityState, KeyRole, PrivateCrossSigningIdentity, UserIdentity, UserIdentityData, device_trust,
        identity_is_verified,
    },
    requests::Meta,
    signing::SignatureError,
    store::{Changes, StoreError},
    verification::{VerificationProof, proof},
};

/// New keys of a reset, held until the server takes them, with the master
/// key of the identity they replace (as listed when the reset began).
#[derive(Clone, Debug)]
pub(super) struct PendingReset {
    pub(super) keys: PrivateCrossSigningIdentity,
    pub(super) replacing: Option<vodozemac::Ed25519PublicKey>,
}

/// A JSON value as a ruma `Raw` of any type (the value is already checked).
fn raw<T>(value: &Value) -> Result<Raw<T>, SignatureError> {
    Raw::new(value).map(Raw::cast_unchecked).map_err(|e| SignatureError::NotCanonical(e.to_string()))
}

impl OlmMachine {
    /// Which cross-signing private keys this device holds.
    pub fn cross_signing_status(&self) -> CrossSigningStatus {
        lock(&self.inner.cross_signing).as_ref().map(PrivateCrossSigningIdentity::status).unwrap_or_default()
    }

    /// Creates our cross-signing identity: master, self-signing and
    /// user-signing keys, the master key signed by this device. The private
    /// keys are saved at once; the returned request (also queued) uploads
    /// the public keys and needs user-interactive auth: the caller sets its
    /// `auth` and sends it, and hands the answer back. Once it is answered,
    /// the engine queues the signature upload of this device by the new
    /// self-signing key (after our device keys are on the server).
    ///
    /// With keys already made and uploaded, this is
    /// [`CrossSigningError::AlreadyBootstrapped`] unless `reset`, which makes
    /// a new identity (other users then see a new master key). Keys made but
    /// never uploaded (a crash, a failed auth) are uploaded again as they are.
    pub async fn bootstrap_cross_signing(&self, reset: bool) -> Result<OutgoingRequest, CrossSigningError> {
        let _account = self.inner.account.lock().await;
        let private = self.keys_to_upload(reset).await?;
        let [mut master, self_signing, user_signing] =
            private.public_keys()?.ok_or(CrossSigningError::MissingPrivateKey(KeyRole::Master))?;
        let device_key_id = format!("ed25519:{}", self.device_id());
        let account = &*_account;
        master.sign(self.user_id(), &device_key_id, |bytes| account.sign_bytes(bytes))?;
        let mut request = upload_signing_keys::v3::Request::new();
        request.master_key = Some(raw(master.signed_json())?);
        request.self_signing_key = Some(raw(self_signing.signed_json())?);
        request.user_signing_key = Some(raw(user_signing.signed_json())?);
        let mut requests = lock(&self.inner.requests);
        requests.cancel_signing_keys_uploads();
        let id = self.fresh_id(&requests);
        Ok(requests.push(
            OutgoingRequest::with_id(id, AnyOutgoingRequest::SigningKeysUpload(request)),
            Meta::SigningKeysUpload(master.key()),
        ))
    }

    /// The keys a bootstrap uploads: a reset's pending keys (resumed when
    /// not resetting again), our keys if never uploaded, or new ones. A
    /// reset's new keys stay in memory until the server takes them, so an
    /// abandoned reset (a wrong password) leaves our identity as it was;
    /// a first bootstrap saves its keys at once (there is nothing to keep).
    async fn keys_to_upload(&self, reset: bool) -> Result<PrivateCrossSigningIdentity, CrossSigningError> {
        let pending = lock(&self.inner.pending_reset).clone();
        let existing = lock(&self.inner.cross_signing).clone();
        let listed = self.inner.store.get_user_identity(self.user_id()).await?;
        let listed_master = listed.as_ref().map(|listed| listed.master_key().key());
        // Decide only once the server was asked what identity we have.
        if self.is_user_dirty(self.user_id()) {
            return Err(CrossSigningError::OwnKeysNotQueried);
        }
        if !reset {
            // Never replace, without being told to, an identity the server
            // lists for us that is not ours.
            let allowed = match (&pending, &listed) {
                (_, None) => true,
                // Resuming a reset: the identity it replaces (or its own keys,
                // taken by the server while the answer was lost) is listed.
                (Some(pending), Some(_)) => {
                    listed_master == pending.replacing || listed_master == pending.keys.public_key(KeyRole::Master)
                }
                (None, Some(listed)) => {
                    existing.as_ref().is_some_and(|keys| keys.held().is_complete() && keys.matches(listed))
                }
            };
            if !allowed {
                return Err(CrossSigningError::IdentityExists);
            }
        }
        let held = existing.as_ref().map(PrivateCrossSigningIdentity::held).unwrap_or_default();
        let holds_any = held.has_master || held.has_self_signing || held.has_user_signing;
        match (pending, existing) {
            (Some(pending), _) if !reset => Ok(pending.keys),
            (_, Some(keys)) if !reset && held.is_complete() => match keys.is_uploaded() {
                true => Err(CrossSigningError::AlreadyBootstrapped),
                false => Ok(keys),
            },
            _ if reset && (holds_any || listed.is_some()) => {
                let keys = PrivateCrossSigningIdentity::generate(self.user_id());
                *lock(&self.inner.pending_reset) = Some(PendingReset { keys: keys.clone(), replacing: listed_master });
                tracing::info!("made new cross-signing keys for a reset");
                Ok(keys)
            }
            _ => {
                let new = PrivateCrossSigningIdentity::generate(self.user_id());
                let changes = Changes { private_identity: Some(new.clone()), ..Default::default() };
                self.save(None, None, changes).await?;
                *lock(&self.inner.cross_signing) = Some(new.clone());
                *lock(&self.inner.pending_reset) = None;
                tracing::info!("made new cross-signing keys");
                Ok(new)
            }
        }
    }

    /// The signing-keys upload was accepted: the keys are ours on the
    /// server. Saves our identity (trusted: we hold its keys) and queues the
    /// signature of this device, if our device keys are published.
    pub(super) async fn receive_signing_keys_upload_response(
        &self,
        master: vodozemac::Ed25519PublicKey,
    ) -> Result<(), StoreError> {
        let account = self.inner.account.lock().await;
        let pending = lock(&self.inner.pending_reset).clone().map(|pending| pending.keys);
        let current = lock(&self.inner.cross_signing).clone();
        let uploaded = |keys: &PrivateCrossSigningIdentity| keys.public_key(KeyRole::Master) == Some(master);
        let from_pending = pending.as_ref().is_some_and(uploaded);
        let Some(mut private) = pending.filter(uploaded).or(current.filter(uploaded)) else {
            tracing::warn!("the server accepted cross-signing keys this device no longer has");
            return Ok(());
        };
        let Ok(Some([mut master, self_signing, user_signing])) = private.public_keys() else { return Ok(()) };
        let device_key_id = format!("ed25519:{}", self.device_id());
        if master.sign(self.user_id(), &device_key_id, |bytes| account.sign_bytes(bytes)).is_err() {
            return Ok(());
        }
        private.mark_uploaded();
        let known = self.inner.store.get_user_identity(self.user_id()).await?;
        let identity = UserIdentityData::new_own(master, self_signing, user_signing, known.as_ref());
        let changes =
            Changes { private_identity: Some(private.clone()), identities: vec![identity], ..Default::default() };
        self.save(None, None, changes).await?;
        *lock(&self.inner.cross_signing) = Some(private);
        if from_pending {
            *lock(&self.inner.pending_reset) = None;
        }
        let published = account.device_keys_published();
        drop(account);
        self.announce([EngineEvent::IdentityChanged {
            user_id: self.user_id().to_owned(),
            state: IdentityState::Verified,
        }]);
        if published {
            self.queue_own_device_signature();
        }
        Ok(())
    }

    /// Signs this device with our self-signing key, if we hold it and our
    /// cross-signing keys are on the server, and queues the signature's
    /// upload; whether it did. Uploading it again is harmless (a server
    /// keeps the signature it has): a caller that cannot tell whether an
    /// earlier upload reached the server (a crash) signs again.
    pub fn sign_own_device(&self) -> bool {
        self.queue_own_device_signature()
    }

    /// Queues the signature of this device by our self-signing key, if we
    /// hold it and the keys are uploaded; whether it did.
    pub(super) fn queue_own_device_signature(&self) -> bool {
        let private = lock(&self.inner.cross_signing).clone();
        let Some(private) = private.filter(PrivateCrossSigningIdentity::is_uploaded) else { return false };
        let mut keys = self.inner.own.signed_device_keys.clone();
        if private.sign_json(KeyRole::SelfSigning, &mut keys).is_err() {
            return false;
        }
        let Ok(keys) = raw(&keys) else { return false };
        let mut signed_keys = upload_signatures::v3::SignedKeys::new();
        signed_keys.add_device_keys(self.device_id().to_owned(), keys);
        let request = upload_signatures::v3::Request::new(BTreeMap::from([(self.user_id().to_owned(), signed_keys)]));
        self.queue(AnyOutgoingRequest::SignatureUpload(request), Meta::SignatureUpload);
        true
    }

    /// Queues the upload of our signatures that a keys query found missing
    /// on the server (see `IdentityOutcome::reuploads`).
    pub(super) fn queue_signature_reuploads(&self, reuploads: Vec<(OwnedUserId, Box<str>, Value)>) {
        for (user_id, master_id, object) in reuploads {
            let Ok(master) = raw(&object) else { continue };
            let mut signed = upload_signatures::v3::SignedKeys::new();
            signed.add_cross_signing_keys(master_id, master);
            let request = upload_signatures::v3::Request::new(BTreeMap::from([(user_id, signed)]));
            self.queue(AnyOutgoingRequest::SignatureUpload(request), Meta::SignatureUpload);
        }
    }

    /// A signature upload was answered; failures are logged (the server
    /// refused a signature we made: a bug, or keys changed meanwhile).
    pub(super) fn receive_signature_upload_response(&self, response: &upload_signatures::v3::Response) {
        for (user_id, failures) in &response.failures {
            for key_id in failures.keys() {
                tracing::warn!(%user_id, %key_id, "the server refused a signature we uploaded");
            }
        }
    }

    /// Our cross-signing private keys as secret storage keeps them.
    pub fn export_cross_signing_keys(&self) -> Option<CrossSigningKeyExport> {
        lock(&self.inner.cross_signing).as_ref().map(PrivateCrossSigningIdentity::export)
    }

    /// Imports cross-signing private keys (from secret storage, gossip or a
    /// file). Each must be the private half of the public key the server
    /// lists for us (our own keys must have been queried); otherwise nothing
    /// is imported. With the master key, our identity becomes trusted here.
    pub async fn import_cross_signing_keys(
        &self,
        export: &CrossSigningKeyExport,
    ) -> Result<CrossSigningStatus, CrossSigningError> {
        let _account = self.inner.account.lock().await;
        let mut identity = self
            .inner
            .store
            .get_user_identity(self.user_id())
            .await?
            .ok_or(crate::identities::ImportKeyError::NoPublicIdentity)?;
        let current = lock(&self.inner.cross_signing)
            .clone()
            .filter(|private| private.matches(&identity))
            .unwrap_or_else(|| PrivateCrossSigningIdentity::empty(self.user_id()));
        let imported = current.import(export, &identity)?;
        if imported.status().has_master {
            identity.clear_replaced_mark();
            let held = proof::private_key_held(self.user_id(), identity.master_key().key());
            if held.is_some_and(|held| identity.trust_master(&held)) {
                identity.note_verified();
            }
        }
        let status = imported.status();
        let changes =
            Changes { private_identity: Some(imported.clone()), identities: vec![identity], ..Default::default() };
        self.save(None, None, changes).await?;
        *lock(&self.inner.cross_signing) = Some(imported);
        // An abandoned reset is not resumed over keys the user chose to import.
        *lock(&self.inner.pending_reset) = None;
        drop(_account);
        if status.has_self_signing {
            self.queue_own_device_signature();
        }
        Ok(status)
    }

    /// Whether `listed`, the server's copy of this device's keys (from a
    /// keys query), is this device's keys signed by our self-signing key as
    /// our stored identity has it: what other devices and users see when
    /// they judge this device. (The engine does not keep this device among
    /// the devices it tracks.) A copy of other keys is not ours: `false`.
    pub async fn is_own_device_cross_signed(&self, listed: &Value) -> Result<bool, StoreError> {
        let parsed =
            crate::devices::DeviceData::from_signed_keys(listed.clone(), self.user_id(), Some(self.device_id()));
        let Ok(device) = parsed else {
            return Ok(false);
        };
        let (ed25519, curve25519) = self.identity_keys();
        if device.ed25519_key() != ed25519 || device.curve25519_key() != curve25519 {
            return Ok(false);
        }
        let Some(own) = self.inner.store.get_user_identity(self.user_id()).await? else { return Ok(false) };
        Ok(crate::identities::is_cross_signed_by_owner(&device, &own))
    }

    /// A user's cross-signing identity, with its trust worked out.
    pub async fn get_identity(&self, user_id: &UserId) -> Result<Option<UserIdentity>, StoreError> {
        let Some(identity) = self.inner.store.get_user_identity(user_id).await? else { return Ok(None) };
        let own = match user_id == self.user_id() {
            true => Some(identity.clone()),
            false => self.inner.store.get_user_identity(self.user_id()).await?,
        };
        Ok(Some(UserIdentity::new(identity, own.as_ref())))
    }

    /// A device's trust: local, cross-signed by its owner, owner verified.
    pub async fn device_trust(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceTrust>, StoreError> {
        let Some(device) = self.inner.store.get_device(user_id, device_id).await? else { return Ok(None) };
        let owner = self.inner.store.get_user_identity(user_id).await?;
        let own = self.inner.store.get_user_identity(self.user_id()).await?;
        Ok(Some(device_trust(&device, owner.as_ref(), own.as_ref())))
    }

    /// `device`'s trust and its owner's identity state.
    pub(super) async fn sender_trust(
        &self,
        device: &crate::devices::DeviceData,
    ) -> Result<(DeviceTrust, Option<IdentityState>), StoreError> {
        let owner = self.inner.store.get_user_identity(device.user_id()).await?;
        let own = match device.user_id() == self.user_id() {
            true => owner.clone(),
            false => self.inner.store.get_user_identity(self.user_id()).await?,
        };
        let state = owner.as_ref().map(|o| o.state(identity_is_verified(o, own.as_ref())));
        Ok((device_trust(device, owner.as_ref(), own.as_ref()), state))
    }

    /// The members among `users` whose identity has a pin or verification
    /// violation, with which (a room's state: pass its members).
    pub async fn identity_violations<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> Result<Vec<(OwnedUserId, IdentityState)>, StoreError> {
        let own = self.inner.store.get_user_identity(self.user_id()).await?;
        let mut violations = Vec::new();
        for user_id in users {
            if let Some(identity) = self.inner.store.get_user_identity(user_id).await? {
                let state = identity.state(identity_is_verified(&identity, own.as_ref()));
                if state.is_violation() {
                    violations.push((user_id.to_owned(), state));
                }
            }
        }
        Ok(violations)
    }

    /// Verifies a user's identity. Ours: this device trusts the master key
    /// from now on and signs it. Another user's: our user-signing key signs
    /// their master key. The signature upload is queued and returned.
    /// Prefer [`verify_identity_key`](Self::verify_identity_key) when the
    /// user compared a particular key (a server could swap the identity in
    /// between).
    pub async fn verify_identity(&self, user_id: &UserId) -> Result<OutgoingRequest, CrossSigningError> {
        let identity = self.known_identity(user_id).await?;
        self.verify_identity_key(user_id, identity.master_key().key()).await
    }

    /// [`verify_identity`](Self::verify_identity), only if the user's
    /// current master key is `master_key` (the one the user compared, e.g.
    /// in an interactive verification); otherwise
    /// [`CrossSigningError::MasterKeyChanged`] and nothing changes.
    pub async fn verify_identity_key(
        &self,
        user_id: &UserId,
        master_key: vodozemac::Ed25519PublicKey,
    ) -> Result<OutgoingRequest, CrossSigningError> {
        let proof = proof::key_comparison(user_id, None, Some(master_key))
            .ok_or_else(|| CrossSigningError::MasterKeyChanged(user_id.to_owned()))?;
        self.verify_identity_with(&proof).await
    }

    /// Verifies the identity `proof` covers (a verification's result):
    /// [`CrossSigningError::MasterKeyChanged`] if the user's current master
    /// key is not the proven one.
    pub(crate) async fn verify_identity_with(
        &self,
        proof: &VerificationProof,
    ) -> Result<OutgoingRequest, CrossSigningError> {
        let user_id = proof.user_id();
        let account = self.inner.account.lock().await;
        let mut identity = self.known_identity(user_id).await?;
        if !proof.covers_master_key(user_id, identity.master_key().key()) {
            return Err(CrossSigningError::MasterKeyChanged(user_id.to_owned()));
        }
        // An explicit verification is the user's decision, even of a key
        // that was replaced before.
        identity.clear_replaced_mark();
        let master_id: Box<str> = identity.master_key().key().to_base64().into();
        // The key id of the one signature this verification adds: only it
        // is uploaded (see `with_only_signature`).
        let new_signature = if user_id == self.user_id() {
            let device_key_id = format!("ed25519:{}", self.device_id());
            identity.master_key_mut().sign(user_id, &device_key_id, |bytes| account.sign_bytes(bytes))?;
            identity.trust_master(proof);
            device_key_id
        } else {
            let own = self.inner.store.get_user_identity(self.user_id()).await?;
            let own = own.filter(|own| identity_is_verified(own, Some(own)));
            let own = own.ok_or(CrossSigningError::OwnIdentityNotVerified)?;
            let private = lock(&self.inner.cross_signing).clone();
            let user_signing = own.user_signing_key().map(CrossSigningPublicKey::key);
            let private = private
                .filter(|keys| {
                    keys.public_key(KeyRole::UserSigning).is_some()
                        && keys.public_key(KeyRole::UserSigning) == user_signing
                })
                .ok_or(CrossSigningError::MissingPrivateKey(KeyRole::UserSigning))?;
            private.sign_key(KeyRole::UserSigning, identity.master_key_mut())?;
            user_signing.map(|key| crate::identities::key_id_of(&key)).unwrap_or_default()
        };
        identity.note_verified();
        let master = raw(&identity.master_key().with_only_signature(self.user_id(), &new_signature))?;
        let own = match user_id == self.user_id() {
            true => Some(identity.clone()),
            false => self.inner.store.get_user_identity(self.user_id()).await?,
        };
        let state = identity.state(identity_is_verified(&identity, own.as_ref()));
        self.save(None, None, Changes { identities: vec![identity], ..Default::default() }).await?;
        drop(account);
        self.announce([EngineEvent::IdentityChanged { user_id: user_id.to_owned(), state }]);
        let mut signed = upload_signatures::v3::SignedKeys::new();
        signed.add_cross_signing_keys(master_id, master);
        let request = upload_signatures::v3::Request::new(BTreeMap::from([(user_id.to_owned(), signed)]));
        Ok(self.queue(AnyOutgoingRequest::SignatureUpload(request), Meta::SignatureUpload))
    }

    /// Forgets that we had verified `user_id` (ends a verification
    /// violation); the current master key becomes the pinned one.
    pub async fn withdraw_verification(&self, user_id: &UserId) -> Result<(), CrossSigningError> {
        self.change_identity(user_id, UserIdentityData::withdraw_verification).await
    }

    /// Accepts `user_id`'s current master key (ends a pin violation).
    pub async fn pin_current_master_key(&self, user_id: &UserId) -> Result<(), CrossSigningError> {
        self.change_identity(user_id, UserIdentityData::pin_current_master_key).await
    }

    async fn change_identity(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut UserIdentityData),
    ) -> Result<(), CrossSigningError> {
        let _account = self.inner.account.lock().await;
        let mut identity = self.known_identity(user_id).await?;
        change(&mut identity);
        let own = self.inner.store.get_user_identity(self.user_id()).await?;
        let own = if user_id == self.user_id() { Some(&identity) } else { own.as_ref() };
        let state = identity.state(identity_is_verified(&identity, own));
        self.save(None, None, Changes { identities: vec![identity], ..Default::default() }).await?;
        self.announce([EngineEvent::IdentityChanged { user_id: user_id.to_owned(), state }]);
        Ok(())
    }

    async fn known_identity(&self, user_id: &UserId) -> Result<UserIdentityData, CrossSigningError> {
        self.inner
            .store
            .get_user_identity(user_id)
            .await?
            .ok_or_else(|| CrossSigningError::NoIdentity(user_id.to_owned()))
    }

    /// Cross-signs one of our own devices with our self-signing key (it then
    /// shows verified wherever our identity is): the signature is saved with
    /// the device and its upload queued and returned. Other users' devices
    /// are trusted through their owner's identity instead.
    pub async fn verify_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<OutgoingRequest, CrossSigningError> {
        let unknown =
            || CrossSigningError::UnknownDevice { user_id: user_id.to_owned(), device_id: device_id.to_owned() };
        let device = self.inner.store.get_device(user_id, device_id).await?.ok_or_else(unknown)?;
        let proof = proof::key_comparison(user_id, Some((device_id.to_owned(), device.ed25519_key())), None)
            .ok_or_else(unknown)?;
        self.verify_device_with(&proof).await
    }

    /// Cross-signs our own device `proof` covers (a verification's result),
    /// if its key is still the proven one.
    pub(crate) async fn verify_device_with(
        &self,
        proof: &VerificationProof,
    ) -> Result<OutgoingRequest, CrossSigningError> {
        let user_id = proof.user_id();
        let Some((device_id, _)) = proof.device() else {
            return Err(CrossSigningError::UnknownDevice {
                user_id: user_id.to_owned(),
                device_id: self.device_id().to_owned(),
            });
        };
        let unknown =
            || CrossSigningError::UnknownDevice { user_id: user_id.to_owned(), device_id: device_id.to_owned() };
        if user_id != self.user_id() {
            return Err(CrossSigningError::NotOwnDevice {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
            });
        }
        let _account = self.inner.account.lock().await;
        let mut device = self.inner.store.get_device(user_id, device_id).await?.ok_or_else(unknown)?;
        if !proof.covers_device(user_id, device_id, device.ed25519_key()) {
            return Err(unknown());
        }
        let private = lock(&self.inner.cross_signing).clone();
        let private = private.ok_or(CrossSigningError::MissingPrivateKey(KeyRole::SelfSigning))?;
        private.sign_json(KeyRole::SelfSigning, device.signed_keys_mut())?;
        let keys = raw(device.signed_keys())?;
        self.save(None, None, Changes { devices: vec![device], ..Default::default() }).await?;
        let mut signed = upload_signatures::v3::SignedKeys::new();
        signed.add_device_keys(device_id.to_owned(), keys);
        let request = upload_signatures::v3::Request::new(BTreeMap::from([(user_id.to_owned(), signed)]));
        Ok(self.queue(AnyOutgoingRequest::SignatureUpload(request), Meta::SignatureUpload))
    }
}

/// Each recipient device's trust, by (user, device).
pub(super) type RecipientTrust = std::collections::HashMap<(OwnedUserId, ruma_common::OwnedDeviceId), DeviceTrust>;

impl OlmMachine {
    /// The trust of every recipient device, if `strategy` looks at it
    /// (empty for `LegacyAllDevices`: no signature is checked); under
    /// `ErrorOnVerifiedUserProblem`, the refusal if a verified user has a
    /// problem.
    pub(super) async fn recipient_trust(
        &self,
        devices: &BTreeMap<OwnedUserId, BTreeMap<ruma_common::OwnedDeviceId, crate::devices::DeviceData>>,
        strategy: crate::megolm::SharingStrategy,
    ) -> Result<RecipientTrust, crate::megolm::ShareError> {
        let mut trust = RecipientTrust::new();
        if !strategy.needs_trust() {
            return Ok(trust);
        }
        let own = self.inner.store.get_user_identity(self.user_id()).await?;
        let mut members = Vec::new();
        for (user_id, user_devices) in devices {
            let identity = match **user_id == *self.user_id() {
                true => own.clone(),
                false => self.inner.store.get_user_identity(user_id).await?,
            };
            let state = identity.as_ref().map(|i| i.state(identity_is_verified(i, own.as_ref())));
            let mut member = crate::megolm::MemberTrust { user_id, state, devices: Vec::new() };
            for device in user_devices.values() {
                let own_device = **user_id == *self.user_id() && device.device_id() == self.device_id();
                if device.is_deleted() || device.is_blacklisted() || own_device {
                    continue;
                }
                let device_trust = device_trust(device, identity.as_ref(), own.as_ref());
                trust.insert((user_id.clone(), device.device_id().to_owned()), device_trust);
                member.devices.push((device, device_trust));
            }
            members.push(member);
        }
        match strategy {
            crate::megolm::SharingStrategy::ErrorOnVerifiedUserProblem => {
                crate::megolm::verified_user_problems(&members, false)?;
            }
            crate::megolm::SharingStrategy::IdentityBased => crate::megolm::verified_user_problems(&members, true)?,
            _ => {}
        }
        Ok(trust)
    }
}

/// What a keys-query answer changed in identities.
#[derive(Default)]
pub(super) struct IdentityOutcome {
    /// Identities to save.
    pub(super) identities: Vec<UserIdentityData>,
    /// Our private keys, when whether they match the listed identity changed.
    pub(super) private_identity: Option<PrivateCrossSigningIdentity>,
    /// Events to announce after the save.
    pub(super) events: Vec<EngineEvent>,
    /// Each queried user's cross-signing keys (new or known), for the
    /// key-confusion check of their devices.
    pub(super) keys: BTreeMap<OwnedUserId, Vec<CrossSigningPublicKey>>,
    /// Our signatures of other users' master keys that the server does not
    /// list (their upload was lost: a crash, a refused answer): kept on the
    /// new copy and uploaded again once it is saved.
    pub(super) reuploads: Vec<(OwnedUserId, Box<str>, Value)>,
}

impl OlmMachine {
    /// Checks the identities listed for `users` in a keys-query answer: a
    /// refused identity changes nothing (what we knew stays).
    pub(super) async fn check_listed_identities(
        &self,
        users: &[&OwnedUserId],
        response: &ruma_client_api::keys::get_keys::v3::Response,
    ) -> Result<IdentityOutcome, StoreError> {
        let own_known = self.inner.store.get_user_identity(self.user_id()).await?;
        let mut known = BTreeMap::new();
        let mut checked = BTreeMap::new();
        for &user_id in users {
            let old = match **user_id == *self.user_id() {
                true => own_known.clone(),
                false => self.inner.store.get_user_identity(user_id).await?,
            };
            let listed = crate::identities::ListedIdentity {
                master: response.master_keys.get(user_id),
                self_signing: response.self_signing_keys.get(user_id),
                user_signing: response.user_signing_keys.get(user_id),
            };
            let own = **user_id == *self.user_id();
            let old_verified = old.as_ref().is_some_and(|old| {
                identity_is_verified(old, own_known.as_ref())
                    || (!own && own_known.as_ref().is_some_and(|own_known| own_known.ever_verified(old)))
            });
            match UserIdentityData::from_listed(user_id, listed, own, old.as_ref().map(|old| (old, old_verified))) {
                Ok(Some(new)) => {
                    checked.insert(user_id.clone(), new);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%user_id, %error, "rejected cross-signing keys from /keys/query"),
            }
            if let Some(old) = old {
                known.insert(user_id.clone(), old);
            }
        }
        let mut outcome = IdentityOutcome::default();
        if let Some(own) = checked.get_mut(self.user_id()) {
            outcome.private_identity = self.judge_own_identity(own);
        }
        let own_now = checked.get(self.user_id()).cloned().or_else(|| own_known.clone());
        // Our user-signing key, if our identity is trusted here.
        let our_user_signing = own_now
            .as_ref()
            .filter(|own| own.is_master_trusted())
            .and_then(|own| own.user_signing_key().map(CrossSigningPublicKey::key));
        for (user_id, mut identity) in checked {
            if let (Some(old), Some(user_signing)) = (known.get(&user_id), our_user_signing)
                && user_id != *self.user_id()
            {
                let key_id = crate::identities::key_id_of(&user_signing);
                if identity.master_key_mut().adopt_signature(old.master_key(), self.user_id(), &key_id, &user_signing) {
                    tracing::info!(%user_id, "our signature of a verified user's master key is not on the server; uploading it again");
                    let master_id: Box<str> = identity.master_key().key().to_base64().into();
                    let object = identity.master_key().with_only_signature(self.user_id(), &key_id);
                    outcome.reuploads.push((user_id.clone(), master_id, object));
                }
            }
            let verified = identity_is_verified(&identity, own_now.as_ref());
            if verified {
                identity.note_verified();
            }
            let state = identity.state(verified);
            let old = known.get(&user_id);
            let old_state = old.map(|old| old.state(identity_is_verified(old, own_known.as_ref())));
            let master_changed = old.is_none_or(|old| old.master_key().key() != identity.master_key().key());
            if master_changed || old_state != Some(state) {
                outcome.events.push(EngineEvent::IdentityChanged { user_id: user_id.clone(), state });
            }
            if old != Some(&identity) {
                outcome.identities.push(identity.clone());
            }
            known.insert(user_id, identity);
        }
        outcome.keys =
            known.into_iter().map(|(user, identity)| (user, identity.public_keys().cloned().collect())).collect();
        Ok(outcome)
    }

    /// Our own identity as the server lists it: trusted if we hold its
    /// master key (even if it was marked replaced: holding the private key
    /// is the spec's own test of our identity; a device that still holds
    /// keys another device replaced trusts them again if the server replays
    /// them, as every client does). Keys we hold that are not its keys (a reset elsewhere, or
    /// a server replaying an old identity) are set aside, not destroyed: a
    /// lying server must not be able to make us lose them, and they are not
    /// used while they do not match. Returns our keys to save when that
    /// changed.
    fn judge_own_identity(&self, own: &mut UserIdentityData) -> Option<PrivateCrossSigningIdentity> {
        let mut keys = lock(&self.inner.cross_signing).clone()?;
        if !keys.matches(own) && keys.is_uploaded() && !keys.is_retired() && !own.is_master_replaced() {
            // A new identity we hold no keys of (a reset elsewhere): ours are
            // retired for good, and a later replay of their identity is not
            // trusted again. Listing an already replaced key only sets them
            // aside until ours is listed again.
            tracing::warn!("our cross-signing identity was replaced elsewhere; retiring this device's keys");
            keys.retire();
            return Some(keys);
        }
        let matches = keys.matches(own) && !keys.is_retired();
        if matches && keys.held().has_master {
            // We hold this identity's master key: it is ours, whatever the
            // server listed in between (a listing of another key and back
            // is not a rollback of a key we hold the newest of).
            own.clear_replaced_mark();
            if let Some(held) = proof::private_key_held(self.user_id(), own.master_key().key()) {
                own.trust_master(&held);
            }
        }
        if keys.is_uploaded() && keys.is_stale() == matches {
            if !matches {
                tracing::warn!("the server lists a cross-signing identity for us whose keys we do not hold");
            }
            keys.set_stale(!matches);
            // Applied to memory once the keys query's changes are saved.
            return Some(keys);
        }
        None
    }
}
