//! Cross-signing in the client: bootstrapping (and resetting) our identity
//! with user-interactive auth, user identities with their trust, and the
//! commands that verify, pin or withdraw. The engine makes and checks the
//! keys; this module sends its requests, doing the UIA round trips.

use std::time::Duration;

use hush_crypto_core::{
    AnyOutgoingRequest,
    identities::{CrossSigningKeyExport, CrossSigningStatus, IdentityState},
};
use ruma_client_api::uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier};
use ruma_common::UserId;

use crate::{Client, ClientError, Encryption, http::HttpError};

/// A user's cross-signing identity, with its trust, and the commands on it.
#[derive(Clone, Debug)]
pub struct UserIdentity {
    client: Client,
    inner: hush_crypto_core::identities::UserIdentity,
}

impl UserIdentity {
    /// The engine's view (keys, state).
    pub fn inner(&self) -> &hush_crypto_core::identities::UserIdentity {
        &self.inner
    }

    /// The user.
    pub fn user_id(&self) -> &UserId {
        self.inner.user_id()
    }

    /// Where the identity stands (verified, unverified, pin or verification violation).
    pub fn state(&self) -> IdentityState {
        self.inner.state()
    }

    /// Whether it is verified (ours: this device trusts our master key;
    /// another user's: our user-signing key signed their master key).
    pub fn is_verified(&self) -> bool {
        self.inner.is_verified()
    }

    /// Verifies the identity (after comparing keys out of band or by an
    /// interactive verification) and uploads the signature. Only the master
    /// key this value was read with is verified: if the server listed
    /// another one since, this is `CrossSigningError::MasterKeyChanged`.
    pub async fn verify(&self) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        machine.verify_identity_key(self.user_id(), self.inner.master_key()).await?;
        self.client.send_outgoing_requests().await
    }

    /// Forgets that we had verified this user (ends a verification violation).
    pub async fn withdraw_verification(&self) -> Result<(), ClientError> {
        Ok(self.client.olm_machine()?.withdraw_verification(self.user_id()).await?)
    }

    /// Accepts the user's current master key (ends a pin violation).
    pub async fn pin_current_master_key(&self) -> Result<(), ClientError> {
        Ok(self.client.olm_machine()?.pin_current_master_key(self.user_id()).await?)
    }
}

impl Encryption {
    /// Which cross-signing private keys this device holds.
    pub fn cross_signing_status(&self) -> Result<CrossSigningStatus, ClientError> {
        Ok(self.client.olm_machine()?.cross_signing_status())
    }

    /// Creates our cross-signing identity (or, with `reset`, replaces it),
    /// signs this device, and uploads both. The keys upload needs
    /// user-interactive auth when the server asks (Synapse does for a
    /// reset): `auth` is sent as given; a server that wants more answers
    /// [`HttpError::AuthRequired`] with its session, to try again with.
    pub async fn bootstrap_cross_signing(&self, reset: bool, auth: Option<AuthData>) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        // Our device keys go first: the device signature needs them.
        self.client.send_outgoing_requests().await?;
        let request = machine.bootstrap_cross_signing(reset).await?;
        let AnyOutgoingRequest::SigningKeysUpload(upload) = request.request() else {
            return Err(ClientError::Internal(
                "bootstrap returned another kind of request than a signing-keys upload".into(),
            ));
        };
        let mut upload = upload.clone();
        upload.auth = auth;
        let token = self.client.access_token()?;
        let response = self.client.http().send(upload, Some(&token), Duration::ZERO).await?;
        machine.mark_request_as_sent(request.request_id(), &response, self.client.now()).await?;
        self.client.send_outgoing_requests().await
    }

    /// [`bootstrap_cross_signing`](Self::bootstrap_cross_signing) that
    /// answers a password challenge: tried without auth first (a first
    /// upload often needs none), then with `m.login.password` in the
    /// server's session. A wrong password is
    /// [`HttpError::AuthRequired`] with `errcode` `M_FORBIDDEN`, and leaves
    /// the server's keys as they were.
    pub async fn bootstrap_cross_signing_with_password(&self, reset: bool, password: &str) -> Result<(), ClientError> {
        match self.bootstrap_cross_signing(reset, None).await {
            Err(ClientError::Http(HttpError::AuthRequired { session, flows, .. }))
                if flows.iter().any(|flow| flow.iter().all(|stage| stage == "m.login.password")) =>
            {
                let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
                let identifier = UserIdentifier::Matrix(MatrixUserIdentifier::new(user_id.to_string()));
                let mut password = Password::new(identifier, password.to_owned());
                password.session = session;
                // The keys made by the first attempt were never uploaded: no reset again.
                self.bootstrap_cross_signing(false, Some(AuthData::Password(password))).await
            }
            other => other,
        }
    }

    /// A user's identity as last queried (queried now if unknown).
    pub async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentity>, ClientError> {
        let machine = self.client.olm_machine()?;
        if machine.get_identity(user_id).await?.is_none() {
            machine.mark_users_outdated([user_id]).await?;
            self.client.send_outgoing_requests().await?;
        }
        let inner = machine.get_identity(user_id).await?;
        Ok(inner.map(|inner| UserIdentity { client: self.client.clone(), inner }))
    }

    /// Queries users' keys again now (devices and identities).
    pub async fn refresh_user_keys(&self, users: &[&UserId]) -> Result<(), ClientError> {
        let machine = self.client.olm_machine()?;
        machine.mark_users_outdated(users.iter().copied()).await?;
        self.client.send_outgoing_requests().await
    }

    /// Our cross-signing private keys, for secret storage or a backup file.
    pub fn export_cross_signing_keys(&self) -> Result<Option<CrossSigningKeyExport>, ClientError> {
        Ok(self.client.olm_machine()?.export_cross_signing_keys())
    }

    /// Imports cross-signing private keys, each checked against the public
    /// key the server lists for us; this device is signed with the imported
    /// self-signing key.
    pub async fn import_cross_signing_keys(
        &self,
        export: &CrossSigningKeyExport,
    ) -> Result<CrossSigningStatus, ClientError> {
        let machine = self.client.olm_machine()?;
        let user_id = self.client.session().ok_or(ClientError::NotLoggedIn)?.user_id;
        self.refresh_user_keys(&[&user_id]).await?;
        let status = machine.import_cross_signing_keys(export).await?;
        self.client.send_outgoing_requests().await?;
        Ok(status)
    }
}
