//! `rooms`, `create-room`, `invite`, `join`.

use hush_client::{Client, CreateRoomOptions, Membership, RotationSettings};
use serde_json::json;

use super::{catch_up, known_room, room_id, user_id};
use crate::error::CliError;
use crate::output::Output;

fn membership(m: Option<Membership>) -> &'static str {
    match m {
        Some(Membership::Join) => "joined",
        Some(Membership::Invite) => "invited",
        Some(Membership::Leave) => "left",
        None => "unknown",
    }
}

pub(crate) async fn list(client: &Client, output: Output) -> Result<(), CliError> {
    catch_up(client).await?;
    for room in client.rooms() {
        let state = membership(room.membership());
        let encrypted = room.is_encrypted();
        output.print(
            format_args!("{}  {state}{}", room.room_id(), if encrypted { "  encrypted" } else { "" }),
            json!({"room_id": room.room_id(), "membership": state, "encrypted": encrypted}),
        );
    }
    Ok(())
}

pub(crate) async fn create(
    client: &Client,
    name: Option<String>,
    invite: &[String],
    unencrypted: bool,
    rotation_messages: Option<u64>,
    output: Output,
) -> Result<(), CliError> {
    let invite = invite.iter().map(|u| user_id(u)).collect::<Result<Vec<_>, _>>()?;
    let encryption = (!unencrypted).then_some(RotationSettings { period: None, messages: rotation_messages });
    let options = CreateRoomOptions { name, invite, encryption, ..Default::default() };
    let room = client.create_room_with(options).await?;
    output.print(&room, json!({"room_id": room, "encrypted": !unencrypted}));
    Ok(())
}

pub(crate) async fn invite(client: &Client, room: &str, user: &str, output: Output) -> Result<(), CliError> {
    let user = user_id(user)?;
    let room = known_room(client, room).await?;
    room.invite_user_by_id(&user).await?;
    output.print(
        format_args!("invited {user} to {}", room.room_id()),
        json!({"invited": user, "room_id": room.room_id()}),
    );
    Ok(())
}

pub(crate) async fn join(client: &Client, room: &str, output: Output) -> Result<(), CliError> {
    let room_id = room_id(room)?;
    client.join_room(&room_id).await?;
    catch_up(client).await?;
    output.print(format_args!("joined {room_id}"), json!({"joined": room_id}));
    Ok(())
}
