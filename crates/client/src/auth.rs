//! Logging in and restoring a session.

use ruma_client_api::session::login;
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError};

/// A logged-in session: store it to restore the client later.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device the access token belongs to.
    pub device_id: OwnedDeviceId,
    /// The access token (secret).
    pub access_token: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// Password login (`client.matrix_auth()`).
#[derive(Debug)]
pub struct MatrixAuth<'a> {
    pub(crate) client: &'a Client,
}

impl<'a> MatrixAuth<'a> {
    /// Starts a password login for `user` (a user id or localpart).
    pub fn login_username(&self, user: &str, password: &str) -> LoginBuilder<'a> {
        LoginBuilder {
            client: self.client,
            user: user.to_owned(),
            password: password.to_owned(),
            device_id: None,
            display_name: None,
        }
    }
}

/// A password login being prepared.
pub struct LoginBuilder<'a> {
    client: &'a Client,
    user: String,
    password: String,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<String>,
}

impl std::fmt::Debug for LoginBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBuilder")
            .field("user", &self.user)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl LoginBuilder<'_> {
    /// Logs in as this device (e.g. the device id saved with the store):
    /// the server replaces the token without creating a new device.
    pub fn device_id(mut self, device_id: &str) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// The display name of a newly created device.
    pub fn initial_device_display_name(mut self, name: &str) -> Self {
        self.display_name = Some(name.to_owned());
        self
    }

    /// Logs in, opens the crypto store for the session's device and returns
    /// the session for the application to store.
    pub async fn send(self) -> Result<Session, ClientError> {
        let identifier = login::v3::LoginInfo::Password(login::v3::Password::new(
            ruma_client_api::uiaa::UserIdentifier::Matrix(ruma_client_api::uiaa::MatrixUserIdentifier::new(
                self.user.clone(),
            )),
            self.password.clone(),
        ));
        let mut request = login::v3::Request::new(identifier);
        request.device_id = self.device_id.clone();
        request.initial_device_display_name = self.display_name.clone();
        let response = self.client.http().send(request, None, Default::default()).await?;
        let session =
            Session { user_id: response.user_id, device_id: response.device_id, access_token: response.access_token };
        self.client.activate(session.clone()).await?;
        Ok(session)
    }
}

impl<'a> MatrixAuth<'a> {
    /// Starts registering a new account, where the server allows it
    /// (open registration, or registration whose only stage is
    /// `m.login.dummy`). A server that asks for anything more (a captcha, an
    /// email, a token) answers [`HttpError::AuthRequired`](crate::http::HttpError::AuthRequired)
    /// with its flows.
    pub fn register(&self, username: &str, password: &str) -> RegisterBuilder<'a> {
        RegisterBuilder {
            client: self.client,
            username: username.to_owned(),
            password: password.to_owned(),
            device_id: None,
            display_name: None,
        }
    }

    /// Logs the session out on the server (its access token and device are
    /// deleted there). The local store is left as it is: it belongs to a
    /// device that no longer exists, so the application may delete it.
    pub async fn logout(&self) -> Result<(), ClientError> {
        let token = self.client.access_token()?;
        let request = ruma_client_api::session::logout::v3::Request::new();
        self.client.http().send(request, Some(&token), Default::default()).await?;
        Ok(())
    }
}

/// A registration being prepared (`client.matrix_auth().register(..)`).
pub struct RegisterBuilder<'a> {
    client: &'a Client,
    username: String,
    password: String,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<String>,
}

impl std::fmt::Debug for RegisterBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterBuilder")
            .field("username", &self.username)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl RegisterBuilder<'_> {
    /// The id of the account's first device.
    pub fn device_id(mut self, device_id: &str) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// The display name of the account's first device.
    pub fn initial_device_display_name(mut self, name: &str) -> Self {
        self.display_name = Some(name.to_owned());
        self
    }

    /// Registers, opens the crypto store for the new device and returns the
    /// session for the application to store. If the server asks for
    /// user-interactive auth whose flows include `m.login.dummy` alone, the
    /// request is sent again with it, once.
    pub async fn send(self) -> Result<Session, ClientError> {
        let client = self.client;
        let response = self.register(false).await?;
        let (Some(access_token), Some(device_id)) = (response.access_token, response.device_id) else {
            return Err(ClientError::Http(crate::http::HttpError::Response(
                "the registration answer has no access token or device id".into(),
            )));
        };
        let session = Session { user_id: response.user_id, device_id, access_token };
        client.activate(session.clone()).await?;
        Ok(session)
    }

    /// Registers the account without logging in (`inhibit_login`): no
    /// device is created, no store opened, and the client stays logged out
    /// (an admin tool creating accounts, a bot provisioning its puppets).
    /// Returns the new account's user id; log in with
    /// [`login_username`](MatrixAuth::login_username) when a device is
    /// wanted.
    pub async fn send_without_login(self) -> Result<OwnedUserId, ClientError> {
        Ok(self.register(true).await?.user_id)
    }

    /// `POST /register`, retried once with `m.login.dummy` auth when that
    /// alone is asked for.
    async fn register(
        self,
        inhibit_login: bool,
    ) -> Result<ruma_client_api::account::register::v3::Response, ClientError> {
        use ruma_client_api::{account::register, uiaa};
        let mut request = register::v3::Request::new();
        request.username = Some(self.username);
        request.password = Some(self.password);
        request.device_id = self.device_id;
        request.initial_device_display_name = self.display_name;
        request.inhibit_login = inhibit_login;
        let http = self.client.http();
        Ok(match http.send(request.clone(), None, Default::default()).await {
            Err(crate::http::HttpError::AuthRequired { session, flows, errcode: None })
                if flows.iter().any(|flow| flow.len() == 1 && flow[0] == "m.login.dummy") =>
            {
                let mut dummy = uiaa::Dummy::new();
                dummy.session = session;
                request.auth = Some(uiaa::AuthData::Dummy(dummy));
                http.send(request, None, Default::default()).await?
            }
            other => other?,
        })
    }
}
