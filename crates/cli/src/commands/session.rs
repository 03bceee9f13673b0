//! `login`, `register`, `whoami`, `logout`.

use std::fs;

use hush_client::{ClientError, http::HttpError};
use serde_json::json;

use crate::account::{self, Home, SavedLogin};
use crate::error::CliError;
use crate::output::Output;
use crate::secrets;

/// A refused login is its own error; the rest as usual.
fn login_error(error: ClientError) -> CliError {
    match &error {
        ClientError::Http(HttpError::Server { status: 403, .. }) => {
            CliError::LoginRefused(format!("login refused (wrong user or password): {error}"))
        }
        _ => error.into(),
    }
}

/// The device a login or registration makes.
#[derive(Clone, Copy)]
pub(crate) struct NewDevice<'a> {
    /// Its id, if the user picked one.
    pub(crate) id: Option<&'a str>,
    /// Its display name.
    pub(crate) name: &'a str,
}

/// How the account is reached: a login of an existing account, or a new one.
#[derive(Clone, Copy)]
enum Entry {
    Login,
    Register,
}

pub(crate) async fn login(
    home: &Home,
    homeserver: &str,
    user: &str,
    device: NewDevice<'_>,
    identity: bool,
    output: Output,
) -> Result<(), CliError> {
    let password = secrets::read(secrets::PASSWORD)?;
    // Logged in here before: log in again as the same device, keeping its store.
    let existing = home.account_dir(user);
    if user.starts_with('@') && existing.join("session.json").exists() {
        let saved = account::load(&existing)?;
        let passphrase = secrets::read(secrets::STORE_PASSPHRASE)?;
        let client = account::client(homeserver, &existing, &passphrase)?;
        let session = client
            .matrix_auth()
            .login_username(user, &password)
            .device_id(saved.session.device_id.as_str())
            .send()
            .await
            .map_err(login_error)?;
        account::save(&existing, &SavedLogin { homeserver: homeserver.to_owned(), session: session.clone() })?;
        report(&session, output)?;
        return match identity {
            true => super::identity::set_up(&client, &password, output).await,
            false => Ok(()),
        };
    }
    let account = Account { homeserver, user, password: &password, device };
    enter(home, account, Entry::Login, identity, output).await
}

/// Registers a new account, then sets its identity up.
pub(crate) async fn register(
    home: &Home,
    homeserver: &str,
    user: &str,
    device: NewDevice<'_>,
    output: Output,
) -> Result<(), CliError> {
    let password = secrets::read(secrets::PASSWORD)?;
    let account = Account { homeserver, user, password: &password, device };
    enter(home, account, Entry::Register, true, output).await
}

/// The account a login or registration is for.
#[derive(Clone, Copy)]
struct Account<'a> {
    homeserver: &'a str,
    user: &'a str,
    password: &'a str,
    device: NewDevice<'a>,
}

/// Logs in or registers into a new account directory (made aside and moved
/// into place once the server took it), and sets the identity up.
async fn enter(
    home: &Home,
    account: Account<'_>,
    entry: Entry,
    identity: bool,
    output: Output,
) -> Result<(), CliError> {
    let Account { homeserver, password, .. } = account;
    let passphrase = secrets::read(secrets::STORE_PASSPHRASE)?;
    let pending = home.pending_dir()?;
    let result = login_into(&pending, account, entry, &passphrase).await;
    let (client, session) = match result {
        Ok(entered) => entered,
        Err(error) => {
            let _ = fs::remove_dir_all(&pending);
            return Err(error);
        }
    };
    let dir = home.account_dir(session.user_id.as_str());
    if dir.exists() {
        // The login made a new device on the server: log it out again.
        if let Err(error) = server_logout(homeserver, &session.access_token).await {
            eprintln!("hush: the extra device {} could not be logged out: {}", session.device_id, error.message());
        }
        let _ = fs::remove_dir_all(&pending);
        return Err(CliError::Other(format!(
            "{} is already logged in here ({}); log in with the full user id to reuse that device, or `hush logout` first",
            session.user_id,
            dir.display()
        )));
    }
    // The open store moves with its directory (the file stays open).
    fs::rename(&pending, &dir)?;
    report(&session, output)?;
    match identity {
        true => super::identity::set_up(&client, password, output).await,
        false => Ok(()),
    }
}

async fn login_into(
    dir: &std::path::Path,
    Account { homeserver, user, password, device }: Account<'_>,
    entry: Entry,
    passphrase: &str,
) -> Result<(hush_client::Client, hush_client::Session), CliError> {
    let client = account::client(homeserver, dir, passphrase)?;
    let session = match entry {
        Entry::Login => {
            let login = client.matrix_auth().login_username(user, password);
            let mut login = login.initial_device_display_name(device.name);
            if let Some(device_id) = device.id {
                login = login.device_id(device_id);
            }
            login.send().await.map_err(login_error)?
        }
        Entry::Register => {
            let mut register = client.matrix_auth().register(user, password).initial_device_display_name(device.name);
            if let Some(device_id) = device.id {
                register = register.device_id(device_id);
            }
            register.send().await.map_err(register_error)?
        }
    };
    account::save(dir, &SavedLogin { homeserver: homeserver.to_owned(), session: session.clone() })?;
    super::catch_up(&client).await?;
    Ok((client, session))
}

/// A refused registration (the name is taken, or the server wants more
/// than a password) is a refused login for the exit code.
fn register_error(error: ClientError) -> CliError {
    match &error {
        ClientError::Http(HttpError::Server { status: 400 | 403, .. } | HttpError::AuthRequired { .. }) => {
            CliError::LoginRefused(format!("registration refused: {error}"))
        }
        _ => error.into(),
    }
}

fn report(session: &hush_client::Session, output: Output) -> Result<(), CliError> {
    output.print(
        format_args!("logged in as {} (device {})", session.user_id, session.device_id),
        json!({"user_id": session.user_id, "device_id": session.device_id}),
    );
    Ok(())
}

pub(crate) fn whoami(client: &hush_client::Client, output: Output) -> Result<(), CliError> {
    let user = client.user_id().ok_or_else(|| CliError::NotLoggedIn("not logged in".into()))?;
    let device = client.device_id().ok_or_else(|| CliError::NotLoggedIn("not logged in".into()))?;
    let keys = client.encryption().identity_keys()?;
    output.print(
        format_args!(
            "{user}\ndevice {device}\ned25519 {}\ncurve25519 {}",
            keys.ed25519.to_base64(),
            keys.curve25519.to_base64()
        ),
        json!({"user_id": user, "device_id": device, "ed25519": keys.ed25519.to_base64(),
            "curve25519": keys.curve25519.to_base64()}),
    );
    Ok(())
}

/// Logs out on the server (without opening the store: a missing or
/// damaged store must not stop a logout), then deletes the account.
pub(crate) async fn logout(home: &Home, account: Option<&str>, output: Output) -> Result<(), CliError> {
    let dir = home.pick(account)?;
    let saved = account::load(&dir)?;
    server_logout(&saved.homeserver, &saved.session.access_token).await?;
    fs::remove_dir_all(&dir)?;
    output.print(
        format_args!("logged out {} (device {}); its store is deleted", saved.session.user_id, saved.session.device_id),
        json!({"logged_out": saved.session.user_id, "device_id": saved.session.device_id}),
    );
    Ok(())
}

/// Logs an access token out on the server; one already logged out is fine.
async fn server_logout(homeserver: &str, access_token: &str) -> Result<(), CliError> {
    let http = hush_client::http::HttpClient::new(homeserver, Default::default())
        .map_err(|e| CliError::Other(e.to_string()))?;
    let request = hush_client::hush_crypto_core::deps::ruma_client_api::session::logout::v3::Request::new();
    match http.send(request, Some(access_token), Default::default()).await {
        Ok(_) | Err(HttpError::LoggedOut) => Ok(()),
        Err(error) => Err(ClientError::Http(error).into()),
    }
}
