//! The commands, each in the module of its concern; `run` picks one.

mod identity;
mod keys;
mod messages;
mod rooms;
mod session;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use hush_client::{Client, Room, SyncSettings};
use ruma_common::{OwnedRoomId, OwnedUserId};

use crate::Command;
use crate::account::{self, Home};
use crate::error::CliError;
use crate::output::Output;

/// Runs one command.
pub(crate) async fn run(
    command: Command,
    home: Option<PathBuf>,
    account: Option<&str>,
    output: Output,
) -> Result<(), CliError> {
    let home = Home::new(home)?;
    match command {
        Command::Login { homeserver, user, device_id, device_name, no_identity } => {
            let device = session::NewDevice { id: device_id.as_deref(), name: &device_name };
            session::login(&home, &homeserver, &user, device, !no_identity, output).await
        }
        Command::Register { homeserver, user, device_id, device_name } => {
            let device = session::NewDevice { id: device_id.as_deref(), name: &device_name };
            session::register(&home, &homeserver, &user, device, output).await
        }
        Command::Logout => session::logout(&home, account, output).await,
        command => {
            let dir = home.pick(account)?;
            let (client, _) = account::open(&dir).await?;
            run_logged_in(command, &client, output).await
        }
    }
}

async fn run_logged_in(command: Command, client: &Client, output: Output) -> Result<(), CliError> {
    match command {
        Command::Whoami => session::whoami(client, output),
        Command::Rooms => rooms::list(client, output).await,
        Command::CreateRoom { name, invite, unencrypted, rotation_messages } => {
            rooms::create(client, name, &invite, unencrypted, rotation_messages, output).await
        }
        Command::Invite { room, user } => rooms::invite(client, &room, &user, output).await,
        Command::Join { room } => rooms::join(client, &room, output).await,
        Command::Send { room, text, file, mime } => messages::send(client, &room, text, file, &mime, output).await,
        Command::Listen { room, count, timeout, save_files } => {
            messages::listen(client, room.as_deref(), count, timeout, save_files, output).await
        }
        Command::History { room, limit } => messages::history(client, &room, limit, output).await,
        Command::Devices { user } => keys::devices(client, user.as_deref(), output).await,
        Command::ExportKeys { file } => keys::export(client, &file, output).await,
        Command::ImportKeys { file } => keys::import(client, &file, output).await,
        Command::Verify { user, device, accept, qr, timeout } => {
            let timeout = Duration::from_secs(timeout);
            match (accept, user) {
                (true, from) => verify::accept(client, from.as_deref(), timeout, output).await,
                (false, Some(user)) => verify::request(client, &user, device.as_deref(), qr, timeout, output).await,
                (false, None) => {
                    Err(CliError::Usage("name the user to verify, or wait for a request with --accept".into()))
                }
            }
        }
        Command::Recovery { action } => match action {
            crate::RecoveryAction::Status => identity::status(client, output).await,
            crate::RecoveryAction::Reset => identity::reset(client, output).await,
            crate::RecoveryAction::Restore => identity::restore(client, output).await,
        },
        Command::Login { .. } | Command::Register { .. } | Command::Logout => {
            Err(CliError::Other("handled before opening the account".into()))
        }
    }
}

/// One sync that does not wait for news: the rooms and keys up to now.
pub(crate) async fn catch_up(client: &Client) -> Result<(), CliError> {
    client.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await?;
    Ok(())
}

pub(crate) fn room_id(room: &str) -> Result<OwnedRoomId, CliError> {
    OwnedRoomId::try_from(room).map_err(|e| CliError::Usage(format!("{room:?} is not a room id ({e})")))
}

pub(crate) fn user_id(user: &str) -> Result<OwnedUserId, CliError> {
    OwnedUserId::try_from(user).map_err(|e| CliError::Usage(format!("{user:?} is not a user id ({e})")))
}

/// A room of the account (after catching up), or the unknown-room error.
pub(crate) async fn known_room(client: &Client, room: &str) -> Result<Room, CliError> {
    let room_id = room_id(room)?;
    catch_up(client).await?;
    match client.get_room(&room_id) {
        Some(room) if room.membership() == Some(hush_client::Membership::Join) => Ok(room),
        Some(_) => Err(CliError::UnknownRoom(format!(
            "this account is not joined to room {room_id} (invited: `hush join {room_id}`; see `hush rooms`)"
        ))),
        None => Err(CliError::UnknownRoom(format!(
            "unknown room {room_id}: this account has not joined it (see `hush rooms`)"
        ))),
    }
}
