//! Passwords and passphrases: from an environment variable, or asked for
//! on the terminal without echo; never from a command-line argument (it
//! would be visible to every user of the machine).

use zeroize::Zeroizing;

use crate::error::CliError;

/// The store passphrase: `HUSH_PASSPHRASE`, or a prompt.
pub(crate) const STORE_PASSPHRASE: (&str, &str) = ("HUSH_PASSPHRASE", "store passphrase: ");
/// The account password: `HUSH_PASSWORD`, or a prompt.
pub(crate) const PASSWORD: (&str, &str) = ("HUSH_PASSWORD", "password: ");
/// A key file's passphrase: `HUSH_EXPORT_PASSPHRASE`, or a prompt.
pub(crate) const KEY_FILE_PASSPHRASE: (&str, &str) = ("HUSH_EXPORT_PASSPHRASE", "key file passphrase: ");
/// The account's recovery key (or secret-storage passphrase):
/// `HUSH_RECOVERY_KEY`, or a prompt.
pub(crate) const RECOVERY_KEY: (&str, &str) = ("HUSH_RECOVERY_KEY", "recovery key (or passphrase): ");

/// A secret from its environment variable only, if set.
pub(crate) fn from_env((variable, _): (&str, &str)) -> Option<Zeroizing<String>> {
    std::env::var(variable).ok().map(Zeroizing::new)
}

/// Reads a secret from `(variable, prompt)`.
pub(crate) fn read((variable, prompt): (&str, &str)) -> Result<Zeroizing<String>, CliError> {
    if let Ok(value) = std::env::var(variable) {
        return Ok(Zeroizing::new(value));
    }
    rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(|e| {
        CliError::Usage(format!("no {variable} in the environment and no terminal to ask on ({e}); set {variable}"))
    })
}
