//! Where accounts live: `<home>/<user id>/session.json` (the homeserver and
//! the session, readable by the owner only) beside `crypto.redb`, the
//! account's crypto store, encrypted with the store passphrase.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hush_client::{Client, Session};
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::secrets;

const SESSION_FILE: &str = "session.json";
const STORE_FILE: &str = "crypto.redb";

/// What is saved of a login.
#[derive(Serialize, Deserialize)]
pub(crate) struct SavedLogin {
    /// The homeserver URL.
    pub(crate) homeserver: String,
    /// The session (its access token is a secret).
    pub(crate) session: Session,
}

/// The directory of every account.
pub(crate) struct Home(PathBuf);

impl Home {
    /// `dir`, or `$XDG_DATA_HOME/hush`, or `~/.local/share/hush`.
    pub(crate) fn new(dir: Option<PathBuf>) -> Result<Self, CliError> {
        if let Some(dir) = dir {
            return Ok(Self(dir));
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(Self(PathBuf::from(data).join("hush")));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| CliError::Usage("neither HUSH_HOME, XDG_DATA_HOME nor HOME is set".into()))?;
        Ok(Self(PathBuf::from(home).join(".local/share/hush")))
    }

    /// The directory of `user_id`'s account (its characters kept to a safe set).
    pub(crate) fn account_dir(&self, user_id: &str) -> PathBuf {
        let name: String =
            user_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=".contains(c) { c } else { '_' }).collect();
        // Never `.` or `..`: a name made only of dots gets a prefix.
        let name = if name.chars().all(|c| c == '.') { format!("_{name}") } else { name };
        self.0.join(name)
    }

    /// A fresh directory for a login in progress.
    pub(crate) fn pending_dir(&self) -> Result<PathBuf, CliError> {
        fs::create_dir_all(&self.0)?;
        let dir = self.0.join(format!(".login-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The account to use: `user_id`'s, or the only one there is.
    pub(crate) fn pick(&self, user_id: Option<&str>) -> Result<PathBuf, CliError> {
        if let Some(user_id) = user_id {
            let user_id = ruma_common::UserId::parse(user_id)
                .map_err(|e| CliError::Usage(format!("--account {user_id:?} is not a user id ({e})")))?;
            let user_id = user_id.as_str();
            let dir = self.account_dir(user_id);
            if !dir.join(SESSION_FILE).exists() {
                return Err(CliError::NotLoggedIn(format!("no account {user_id} here; run `hush login`")));
            }
            return Ok(dir);
        }
        let accounts: Vec<PathBuf> = match fs::read_dir(&self.0) {
            Ok(entries) => {
                entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(SESSION_FILE).exists()).collect()
            }
            Err(_) => Vec::new(),
        };
        match accounts.as_slice() {
            [] => Err(CliError::NotLoggedIn(format!(
                "not logged in (no account in {}); run `hush login`",
                self.0.display()
            ))),
            [one] => Ok(one.clone()),
            _ => Err(CliError::Usage(
                "several accounts are logged in here; choose one with --account @user:server".into(),
            )),
        }
    }
}

/// The store file of an account directory.
pub(crate) fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Saves the login, readable by the owner only.
pub(crate) fn save(dir: &Path, login: &SavedLogin) -> Result<(), CliError> {
    let json = serde_json::to_vec_pretty(login).map_err(|e| CliError::Other(e.to_string()))?;
    let path = dir.join(SESSION_FILE);
    let temporary = dir.join(".session.json.new");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    // A file left over from an interrupted save keeps its old mode: set it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(&json)?;
    file.sync_all()?;
    fs::rename(temporary, path)?;
    Ok(())
}

/// Reads the saved login of an account directory.
pub(crate) fn load(dir: &Path) -> Result<SavedLogin, CliError> {
    let bytes = fs::read(dir.join(SESSION_FILE))
        .map_err(|e| CliError::NotLoggedIn(format!("no saved session in {}: {e}", dir.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::NotLoggedIn(format!("the saved session in {} is damaged: {e}", dir.display())))
}

/// A client for `homeserver` with its store in `dir`.
pub(crate) fn client(homeserver: &str, dir: &Path, passphrase: &str) -> Result<Client, CliError> {
    // Today's Matrix (spec v1.18): room keys only for cross-signed devices,
    // and messages from devices known to be insecure not shown.
    Ok(Client::builder()
        .homeserver_url(homeserver)
        .redb_store(store_path(dir), Some(passphrase))
        .trust_settings(hush_client::TrustSettings::recommended())
        .build()?)
}

/// Opens the account in `dir`: its store must exist (a missing store is
/// never silently replaced by a new one, which would be a new identity for
/// an existing device), and must belong to the session's device.
pub(crate) async fn open(dir: &Path) -> Result<(Client, SavedLogin), CliError> {
    let login = load(dir)?;
    if !store_path(dir).exists() {
        return Err(CliError::NotLoggedIn(format!(
            "the crypto store of {} is missing ({}); its keys are gone: run `hush logout` and log in again",
            login.session.user_id,
            store_path(dir).display()
        )));
    }
    let passphrase = secrets::read(secrets::STORE_PASSPHRASE)?;
    let client = client(&login.homeserver, dir, &passphrase)?;
    client.restore_session(login.session.clone()).await?;
    Ok((client, login))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a user id (from the server, or typed) that would name a
    /// directory outside the home, such as `..`.
    #[test]
    fn account_directories_stay_inside_the_home() {
        let home = Home(PathBuf::from("/home/h"));
        for user in ["@alice:example.org", "..", ".", "@../../etc:x", "/etc/passwd", "@a/b:c"] {
            let dir = home.account_dir(user);
            assert_eq!(dir.parent(), Some(Path::new("/home/h")), "{user}");
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            assert!(!name.contains('/') && name != ".." && name != ".", "{user} -> {name}");
        }
        assert!(matches!(home.pick(Some("..")), Err(CliError::Usage(_))));
    }
}
