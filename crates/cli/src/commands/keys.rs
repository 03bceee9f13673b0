//! `devices`, `export-keys`, `import-keys`.

use std::path::Path;

use hush_client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::user_id;
use crate::error::CliError;
use crate::output::Output;
use crate::secrets;

pub(crate) async fn devices(client: &Client, user: Option<&str>, output: Output) -> Result<(), CliError> {
    let own = client.user_id().ok_or_else(|| CliError::NotLoggedIn("not logged in".into()))?;
    let user = match user {
        Some(user) => user_id(user)?,
        None => own.clone(),
    };
    let identity = client.encryption().get_user_identity(&user).await?;
    let identity_state = match &identity {
        None => "none",
        Some(identity) if identity.is_verified() => "verified",
        Some(identity) if identity.state().is_violation() => "changed",
        Some(_) => "unverified",
    };
    output.print(
        format_args!("{user}  cross-signing identity: {identity_state}"),
        json!({"user_id": user, "identity": identity_state}),
    );
    if user == own {
        let device = client.device_id().ok_or_else(|| CliError::NotLoggedIn("not logged in".into()))?;
        let keys = client.encryption().identity_keys()?;
        let signed = client.encryption().identity_status().await?.this_device_cross_signed;
        output.print(
            format_args!("{device}  (this device)  {}  {}", keys.ed25519.to_base64(), cross_signed_text(signed)),
            json!({"user_id": user, "device_id": device, "ed25519": keys.ed25519.to_base64(), "this_device": true,
                "cross_signed": signed, "verified": signed}),
        );
    }
    for device in client.encryption().get_user_devices(&user).await? {
        let data = device.data();
        let (verified, cross_signed) = (device.is_verified(), device.is_cross_signed_by_owner());
        output.print(
            format_args!(
                "{}  {}  {}  {}  {}",
                data.device_id(),
                crate::output::printable(data.display_name().unwrap_or("-")),
                data.ed25519_key().to_base64(),
                cross_signed_text(cross_signed),
                if verified { "verified" } else { "unverified" }
            ),
            json!({"user_id": user, "device_id": data.device_id(), "display_name": data.display_name(),
                "ed25519": data.ed25519_key().to_base64(), "verified": verified, "cross_signed": cross_signed,
                "locally_verified": data.is_locally_verified()}),
        );
    }
    Ok(())
}

/// Whether a device is cross-signed by its owner, for people: devices
/// that are not get no room keys from clients that exclude insecure devices.
fn cross_signed_text(cross_signed: bool) -> &'static str {
    if cross_signed { "cross-signed" } else { "NOT cross-signed (insecure)" }
}

fn bar(length: Option<u64>, message: &'static str) -> ProgressBar {
    // Drawn on stderr only when it is a terminal.
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::new_spinner(),
    };
    let template = if length.is_some() { "{msg} [{bar:30}] {pos}/{len}" } else { "{spinner} {msg} {pos}" };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

pub(crate) async fn export(client: &Client, file: &Path, output: Output) -> Result<(), CliError> {
    let passphrase = secrets::read(secrets::KEY_FILE_PASSPHRASE)?;
    let progress = bar(None, "exporting room keys");
    let counter = progress.clone();
    let count = client
        .encryption()
        .export_room_keys(file, &passphrase, move |_| {
            counter.inc(1);
            true
        })
        .await?;
    progress.finish_and_clear();
    output.print(
        format_args!("exported {count} room keys to {}", file.display()),
        json!({"exported": count, "file": file}),
    );
    Ok(())
}

pub(crate) async fn import(client: &Client, file: &Path, output: Output) -> Result<(), CliError> {
    if !file.is_file() {
        return Err(CliError::Usage(format!("{} is not a file", file.display())));
    }
    let passphrase = secrets::read(secrets::KEY_FILE_PASSPHRASE)?;
    let progress = bar(Some(0), "importing room keys");
    let shown = progress.clone();
    let result = client
        .encryption()
        .import_room_keys(file, &passphrase, move |done, total| {
            shown.set_length(total as u64);
            shown.set_position(done as u64);
        })
        .await?;
    progress.finish_and_clear();
    output.print(
        format_args!("imported {} of {} room keys", result.imported_count, result.total_count),
        json!({"imported": result.imported_count, "total": result.total_count, "conflicting": result.conflicting_count}),
    );
    Ok(())
}
