//! `hush`: a command-line Matrix client with end-to-end encryption, for
//! people who script Matrix from a terminal. Every command uses only
//! hush-client's public API. See `hush --help` and the exit codes there.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod account;
mod commands;
mod error;
mod output;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CliError, EXIT_CODES};
use crate::output::Output;

/// A Matrix client with end-to-end encryption, for scripts.
#[derive(Parser)]
#[command(name = "hush", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Where accounts are kept (default: $XDG_DATA_HOME/hush or ~/.local/share/hush).
    #[arg(long, env = "HUSH_HOME", global = true)]
    home: Option<PathBuf>,
    /// The account to use (a user id), when several are logged in.
    #[arg(long, env = "HUSH_ACCOUNT", global = true)]
    account: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Subcommand)]
enum Command {
    /// Logs in (password from HUSH_PASSWORD or a prompt), creates the
    /// account's encrypted store (passphrase from HUSH_PASSPHRASE or a
    /// prompt) and sets up the account's cross-signing identity: a new one
    /// on a fresh account (its recovery key printed once), or, for an
    /// account set up elsewhere, recovered with HUSH_RECOVERY_KEY (or a
    /// prompt). Today's clients send room keys only to cross-signed devices.
    Login {
        /// The homeserver URL, e.g. `https://matrix.example.org`.
        #[arg(long)]
        homeserver: String,
        /// The user: a full user id or a localpart.
        #[arg(long)]
        user: String,
        /// The device id (default: the server picks one).
        #[arg(long)]
        device_id: Option<String>,
        /// The new device's display name.
        #[arg(long, default_value = "hush CLI")]
        device_name: String,
        /// Skips the identity setup (the device stays unsigned until
        /// `hush recovery restore` or `hush verify --accept`).
        #[arg(long)]
        no_identity: bool,
    },
    /// Registers a new account where the server allows it (password from
    /// HUSH_PASSWORD or a prompt), then logs in as `login` does.
    Register {
        /// The homeserver URL.
        #[arg(long)]
        homeserver: String,
        /// The new account's localpart.
        #[arg(long)]
        user: String,
        /// The device id (default: the server picks one).
        #[arg(long)]
        device_id: Option<String>,
        /// The device's display name.
        #[arg(long, default_value = "hush CLI")]
        device_name: String,
    },
    /// Verifies a user (or one of their devices; our own other devices
    /// with our own user id) by comparing emoji, or waits for another
    /// device's request with --accept. The answer to "do they match?" is
    /// read from standard input.
    Verify {
        /// The user to verify (with --accept: only accept requests from them).
        user: Option<String>,
        /// Only this device of theirs.
        device: Option<String>,
        /// Waits for a request from another device and accepts it.
        #[arg(long)]
        accept: bool,
        /// Shows a QR code for a phone to scan instead of comparing emoji.
        #[arg(long, conflicts_with = "accept")]
        qr: bool,
        /// Gives up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// The account's recovery: `status` (what is in place), `reset` (a new
    /// key backup and recovery key), `restore` (finish this device's
    /// identity with the recovery key from HUSH_RECOVERY_KEY or a prompt).
    Recovery {
        /// What to do.
        #[command(subcommand)]
        action: RecoveryAction,
    },
    /// Shows the account, its device and the device's identity keys.
    Whoami,
    /// Lists the account's rooms.
    Rooms,
    /// Creates a room (encrypted unless --unencrypted).
    CreateRoom {
        /// The room's name.
        #[arg(long)]
        name: Option<String>,
        /// Users to invite.
        #[arg(long)]
        invite: Vec<String>,
        /// Creates the room without encryption.
        #[arg(long)]
        unencrypted: bool,
        /// Rotate the room key after this many messages.
        #[arg(long)]
        rotation_messages: Option<u64>,
    },
    /// Invites a user into a room.
    Invite {
        /// The room id.
        room: String,
        /// The user id.
        user: String,
    },
    /// Joins a room the account is invited to.
    Join {
        /// The room id.
        room: String,
    },
    /// Sends a text message, or a file with --file.
    Send {
        /// The room id.
        room: String,
        /// The message (read from stdin if neither it nor --file is given).
        text: Option<String>,
        /// Sends this file as an attachment (encrypted in an encrypted room).
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// The file's MIME type.
        #[arg(long, default_value = "application/octet-stream")]
        mime: String,
    },
    /// Prints room events as they arrive (decrypted, or why not).
    Listen {
        /// Only this room.
        #[arg(long)]
        room: Option<String>,
        /// Stops after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stops after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Saves attachments into this directory, decrypted.
        #[arg(long)]
        save_files: Option<PathBuf>,
    },
    /// Prints a room's latest messages, oldest first.
    History {
        /// The room id.
        room: String,
        /// How many events.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Lists a user's devices (default: our own) and their trust.
    Devices {
        /// The user id.
        user: Option<String>,
    },
    /// Writes the room keys to an encrypted key file (passphrase from
    /// HUSH_EXPORT_PASSPHRASE or a prompt).
    ExportKeys {
        /// The file to write.
        file: PathBuf,
    },
    /// Imports room keys from a key file.
    ImportKeys {
        /// The file to read.
        file: PathBuf,
    },
    /// Logs out on the server and deletes the account's session and store.
    Logout,
}

/// `recovery` subcommands.
#[derive(Subcommand)]
enum RecoveryAction {
    /// Shows what is in place and what is missing.
    Status,
    /// Replaces the key backup and the recovery key (the identity stays).
    Reset,
    /// Finishes this device's identity with the recovery key.
    Restore,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(output, &CliError::Other(format!("no async runtime: {error}"))),
    };
    match runtime.block_on(commands::run(cli.command, cli.home, cli.account.as_deref(), output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(output, &error),
    }
}

fn fail(output: Output, error: &CliError) -> ExitCode {
    if output.json {
        let json =
            serde_json::json!({"error": error.kind(), "message": error.message(), "exit_code": error.exit_code()});
        eprintln!("{json}");
    } else {
        eprintln!("hush: {}", output::printable(error.message()));
    }
    ExitCode::from(error.exit_code())
}
