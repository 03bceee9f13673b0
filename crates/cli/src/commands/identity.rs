//! The account's cross-signing identity: set up at `login` and `register`
//! (`ensure_identity`: a new identity on a fresh account, with its recovery
//! key shown once; an identity set up elsewhere recovered with
//! `HUSH_RECOVERY_KEY` or a prompt), and `recovery status|reset|restore`.

use std::io::IsTerminal;

use hush_client::{Client, ClientError, IdentityNeed, IdentityOutcome, IdentitySetup};
use serde_json::json;

use crate::error::CliError;
use crate::output::Output;
use crate::secrets;

/// What a missing identity step means for the user, and how to finish it.
const HOW_TO_FINISH: &str = "this device is logged in but not cross-signed, so clients that exclude insecure devices \
     (Element) send it no room keys: set HUSH_RECOVERY_KEY and run `hush recovery restore`, or verify it from one of \
     your verified devices (`hush verify --accept` here)";

/// Sets up (or finishes) the identity after a login or a registration.
pub(crate) async fn set_up(client: &Client, password: &str, output: Output) -> Result<(), CliError> {
    let mut setup = IdentitySetup::new().password(password);
    if let Some(key) = secrets::from_env(secrets::RECOVERY_KEY) {
        setup = setup.recovery_key(&key);
    }
    match client.encryption().ensure_identity(setup.clone()).await {
        Ok(outcome) => report(client, outcome, output).await,
        Err(ClientError::IdentityNeeds(IdentityNeed::RecoveryKey)) if std::io::stdin().is_terminal() => {
            eprintln!("this account's identity was set up on another device.");
            let key = secrets::read(secrets::RECOVERY_KEY)?;
            let outcome = client.encryption().ensure_identity(setup.recovery_key(&key)).await?;
            report(client, outcome, output).await
        }
        Err(ClientError::IdentityNeeds(need)) => Err(CliError::IdentityIncomplete(format!("{need}: {HOW_TO_FINISH}"))),
        Err(other) => Err(other.into()),
    }
}

/// Prints what the identity step did. A new recovery key is forgotten by
/// the client only once it is printed: a run killed before that prints the
/// same key on the next login.
async fn report(client: &Client, outcome: IdentityOutcome, output: Output) -> Result<(), CliError> {
    match outcome {
        IdentityOutcome::Created { recovery_key, backup } => {
            let backup_line = if backup { "key backup on" } else { "key backup off (as the account asks)" };
            output.print(
                format_args!(
                    "cross-signing set up; this device is signed; {backup_line}.\n\n\
                     RECOVERY KEY (shown only now; keep it somewhere safe: it unlocks this account's encrypted \
                     history and identity on a new device):\n\n    {}\n",
                    recovery_key.as_str()
                ),
                json!({"identity": "created", "recovery_key": recovery_key.as_str(), "backup": backup}),
            );
            client.encryption().recovery_key_saved().await?;
        }
        IdentityOutcome::Recovered { restored_keys } => output.print(
            format_args!(
                "identity recovered: this device is signed; {restored_keys} room keys restored from the backup"
            ),
            json!({"identity": "recovered", "restored_keys": restored_keys}),
        ),
        IdentityOutcome::Ready { backup } => output.print(
            format_args!("cross-signing: this device is signed{}", if backup { "; key backup on" } else { "" }),
            json!({"identity": "ready", "backup": backup}),
        ),
    }
    Ok(())
}

/// `recovery status`: what is in place, and what is missing.
pub(crate) async fn status(client: &Client, output: Output) -> Result<(), CliError> {
    let status = client.encryption().identity_status().await?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let backup = match (&status.backup_on_server, &status.backup_enabled_here) {
        (Some(server), Some(here)) if server == here => format!("version {here}, this device uploads to it"),
        (Some(server), _) => format!("version {server} on the server, not used by this device"),
        (None, _) => "none".to_owned(),
    };
    output.print(
        format_args!(
            "identity on the server: {}\nthis device cross-signed: {}\nprivate cross-signing keys here: {}\n\
             secret storage: {}\nkey backup: {backup}\nbackup preference (m.key_backup): {}\ncomplete: {}",
            yes_no(status.identity_on_server),
            yes_no(status.this_device_cross_signed),
            yes_no(status.private_keys),
            yes_no(status.secret_storage),
            status.key_backup_preference.map_or("not set", |on| if on { "on" } else { "off" }),
            yes_no(status.is_complete()),
        ),
        json!({
            "identity_on_server": status.identity_on_server,
            "this_device_cross_signed": status.this_device_cross_signed,
            "private_keys": status.private_keys,
            "secret_storage": status.secret_storage,
            "backup_on_server": status.backup_on_server,
            "backup_enabled_here": status.backup_enabled_here,
            "backup_key_held": status.backup_key_held,
            "key_backup_preference": status.key_backup_preference,
            "complete": status.is_complete(),
        }),
    );
    Ok(())
}

/// `recovery reset`: a new key backup and a new recovery key; the
/// identity stays. The old recovery key no longer opens anything.
pub(crate) async fn reset(client: &Client, output: Output) -> Result<(), CliError> {
    let recovery_key = client.encryption().reset_recovery(None).await?;
    output.print(
        format_args!(
            "new key backup and recovery key; the old key no longer opens anything.\n\n\
             RECOVERY KEY (shown only now; keep it somewhere safe):\n\n    {}\n",
            recovery_key.as_str()
        ),
        json!({"recovery": "reset", "recovery_key": recovery_key.as_str()}),
    );
    Ok(())
}

/// `recovery restore`: finishes this device's identity with the recovery
/// key (`HUSH_RECOVERY_KEY` or a prompt).
pub(crate) async fn restore(client: &Client, output: Output) -> Result<(), CliError> {
    let key = secrets::read(secrets::RECOVERY_KEY)?;
    let outcome = client.encryption().ensure_identity(IdentitySetup::new().recovery_key(&key)).await?;
    report(client, outcome, output).await
}
