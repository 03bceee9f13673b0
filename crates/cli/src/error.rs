//! The CLI's errors and the exit code each one ends the process with.

use hush_client::{ClientError, http::HttpError};

/// What the exit codes mean (printed by `hush --help`).
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other error (the message says which)
  2  bad usage (unknown command or option, a malformed id)
  3  not logged in: no account, a missing store, or a session the server logged out
  4  login refused (wrong user or password)
  5  unknown room (not joined by this account)
  6  the store cannot be used: it belongs to another device, or the passphrase is wrong
  7  the homeserver could not be reached
  8  logged in, but this device is not cross-signed: the account's identity was set up
     elsewhere (give HUSH_RECOVERY_KEY, or verify this device from another one)
  9  wrong recovery key or passphrase
 10  the verification did not succeed (cancelled, the strings differ, or it timed out)";

/// A failed command.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad usage (exit 2).
    Usage(String),
    /// No usable login (exit 3).
    NotLoggedIn(String),
    /// The server refused the login (exit 4).
    LoginRefused(String),
    /// The room is not one of the account's (exit 5).
    UnknownRoom(String),
    /// The store cannot be used (exit 6).
    Store(String),
    /// The homeserver is unreachable (exit 7).
    Network(String),
    /// Logged in, but the device's identity is not complete (exit 8).
    IdentityIncomplete(String),
    /// The recovery key (or passphrase) does not open secret storage (exit 9).
    WrongRecoveryKey(String),
    /// A verification did not succeed (exit 10).
    Verification(String),
    /// Anything else (exit 1).
    Other(String),
}

impl CliError {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Other(_) => 1,
            Self::Usage(_) => 2,
            Self::NotLoggedIn(_) => 3,
            Self::LoginRefused(_) => 4,
            Self::UnknownRoom(_) => 5,
            Self::Store(_) => 6,
            Self::Network(_) => 7,
            Self::IdentityIncomplete(_) => 8,
            Self::WrongRecoveryKey(_) => 9,
            Self::Verification(_) => 10,
        }
    }

    /// A short name of the kind, for `--json` errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Other(_) => "error",
            Self::Usage(_) => "usage",
            Self::NotLoggedIn(_) => "not_logged_in",
            Self::LoginRefused(_) => "login_refused",
            Self::UnknownRoom(_) => "unknown_room",
            Self::Store(_) => "store",
            Self::Network(_) => "network",
            Self::IdentityIncomplete(_) => "identity_incomplete",
            Self::WrongRecoveryKey(_) => "wrong_recovery_key",
            Self::Verification(_) => "verification_failed",
        }
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Usage(m)
            | Self::NotLoggedIn(m)
            | Self::LoginRefused(m)
            | Self::UnknownRoom(m)
            | Self::Store(m)
            | Self::Network(m)
            | Self::IdentityIncomplete(m)
            | Self::WrongRecoveryKey(m)
            | Self::Verification(m)
            | Self::Other(m) => m,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let message = error.to_string();
        match error {
            ClientError::Http(HttpError::LoggedOut) => {
                Self::NotLoggedIn(format!("{message}: run `hush logout` and `hush login` again"))
            }
            ClientError::Http(http) if http.is_transient() => Self::Network(message),
            ClientError::UnknownRoom(_) => Self::UnknownRoom(message),
            ClientError::DeviceMismatch { .. } | ClientError::Store(_) | ClientError::Open(_) => Self::Store(message),
            ClientError::NotLoggedIn => Self::NotLoggedIn(message),
            ClientError::IdentityNeeds(_) | ClientError::NoSecretStorage => Self::IdentityIncomplete(message),
            ClientError::SecretStorage(_) => Self::WrongRecoveryKey(message),
            _ => Self::Other(message),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::Other(error.to_string())
    }
}
