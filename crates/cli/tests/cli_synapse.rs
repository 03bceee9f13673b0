//! The `hush` binary against a real Synapse (started by `cargo xtask
//! test`): two accounts talking through `send` and `listen --json`, keys
//! moved between devices with `export-keys` / `import-keys`, the exit code
//! of each error, and the identity commands: `register`, `login` setting up
//! or recovering the identity, `recovery status|reset|restore`, `devices`
//! with cross-signing trust, and a scripted SAS between two `hush`
//! processes (`verify` / `verify --accept`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hush_testing::synapse::{homeserver_url, register, unique_name};
use serde_json::Value;

const PASSWORD: &str = "password";

/// One machine's `hush`: its own HUSH_HOME and store passphrase.
struct Hush {
    home: tempfile::TempDir,
    passphrase: String,
}

impl Hush {
    fn new() -> Self {
        Self { home: tempfile::TempDir::new().unwrap(), passphrase: "store passphrase".into() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hush"));
        command
            .args(args)
            .env("HUSH_HOME", self.home.path())
            .env("HUSH_PASSPHRASE", &self.passphrase)
            .env("HUSH_PASSWORD", PASSWORD)
            .env("HUSH_EXPORT_PASSPHRASE", "key file passphrase")
            .env_remove("HUSH_ACCOUNT")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run hush")
    }

    /// Runs a command that must succeed; its JSON lines.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert!(output.status.success(), "hush {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Registers a new user and logs in; returns the user id.
    async fn new_account(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        register(&name, PASSWORD).await.expect("register");
        let login = self.json(&["login", "--homeserver", &homeserver_url(), "--user", &name]);
        login[0]["user_id"].as_str().unwrap().to_owned()
    }

    fn account_dir(&self) -> PathBuf {
        std::fs::read_dir(self.home.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("session.json").exists())
            .expect("an account directory")
    }
}

fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A room of `alice`'s that `bob` joined.
fn shared_room(alice: &Hush, bob: &Hush, bob_id: &str) -> String {
    let room = alice.json(&["create-room", "--name", "cli", "--invite", bob_id]);
    let room = room[0]["room_id"].as_str().unwrap().to_owned();
    bob.json(&["join", &room]);
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn two_accounts_talk_through_send_and_listen_json() {
    let (alice, bob) = (Hush::new(), Hush::new());
    let alice_id = alice.new_account("alice").await;
    let bob_id = bob.new_account("bob").await;
    let room = shared_room(&alice, &bob, &bob_id);
    let files = tempfile::TempDir::new().unwrap();
    let save_dir = files.path().join("saved");
    let mut listener = bob
        .command(&["--json", "listen", "--room", &room, "--count", "2", "--timeout", "120", "--save-files"])
        .arg(&save_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let sent = alice.json(&["send", &room, "hello bob, from a script"]);
    assert!(sent[0]["session_id"].is_string(), "sent encrypted: {sent:?}");
    let attachment = files.path().join("report.txt");
    std::fs::write(&attachment, "a file, encrypted on the way\n".repeat(1000)).unwrap();
    alice.json(&["send", &room, "--file", attachment.to_str().unwrap(), "--mime", "text/plain"]);

    let lines: Vec<Value> = BufReader::new(listener.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("one JSON object per line"))
        .collect();
    let status = listener.wait().unwrap();
    assert!(status.success(), "listen failed");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let text = &lines[0];
    assert_eq!(text["body"], "hello bob, from a script");
    assert_eq!(text["sender"], alice_id.as_str());
    assert!(text["device"].is_string());
    assert_eq!(text["encrypted"], true);
    assert_eq!(text["key_source"], "olm");
    assert_eq!(text["verification_state"], "unverified");
    assert!(text.get("utd_reason").is_none());
    let file = &lines[1];
    assert_eq!(file["msgtype"], "m.file");
    let saved = file["file"]["saved_to"].as_str().expect("saved");
    assert_eq!(std::fs::read(saved).unwrap(), std::fs::read(&attachment).unwrap(), "the file round-trips");

    bob.json(&["send", &room, "hello alice"]);
    let history = alice.json(&["history", &room, "--limit", "10"]);
    let bodies: Vec<&str> = history.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["hello bob, from a script", "report.txt", "hello alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn keys_exported_on_one_device_import_on_another() {
    let (alice, bob) = (Hush::new(), Hush::new());
    let alice_id = alice.new_account("alice").await;
    let bob_id = bob.new_account("bob").await;
    let room = shared_room(&bob, &alice, &alice_id);
    bob.json(&["send", &room, "before the second device"]);
    let read = alice.json(&["history", &room]);
    assert!(read.iter().any(|e| e["body"] == "before the second device"), "{read:?}");
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("keys.txt");
    let exported = alice.json(&["export-keys", file.to_str().unwrap()]);
    assert!(exported[0]["exported"].as_u64().unwrap() >= 1);

    // A second device of Alice's, on another machine.
    let second = Hush::new();
    let login =
        ["login", "--homeserver", &homeserver_url(), "--user", &alice_id, "--device-id", "SECOND", "--no-identity"];
    second.json(&login);
    let before = second.json(&["history", &room]);
    let locked = before.iter().find(|e| e["sender"] == bob_id.as_str() && e["type"] == "m.room.encrypted");
    assert!(locked.and_then(|e| e["utd_reason"].as_str()).is_some(), "undecryptable first: {before:?}");
    let imported = second.json(&["import-keys", file.to_str().unwrap()]);
    assert!(imported[0]["imported"].as_u64().unwrap() >= 1, "{imported:?}");
    let after = second.json(&["history", &room]);
    let read = after.iter().find(|e| e["body"] == "before the second device").expect("decrypted after the import");
    assert_eq!(read["key_source"], "imported");
}

fn assert_fails(output: &Output, code: i32, says: &str) {
    assert_eq!(exit_code(output), code, "stderr: {}", stderr(output));
    assert!(stderr(output).contains(says), "expected {says:?} in: {}", stderr(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn each_error_has_its_message_and_exit_code() {
    let hush = Hush::new();
    // Not logged in.
    assert_fails(&hush.run(&["whoami"]), 3, "not logged in");
    // A wrong password.
    let name = unique_name("carol");
    register(&name, PASSWORD).await.expect("register");
    let mut wrong = hush.command(&["login", "--homeserver", &homeserver_url(), "--user", &name]);
    let output = wrong.env("HUSH_PASSWORD", "not the password").output().unwrap();
    assert_fails(&output, 4, "wrong user or password");
    let output = hush.run(&["--json", "login", "--homeserver", &homeserver_url(), "--user", &name]);
    assert!(output.status.success(), "{}", stderr(&output));
    let user_id = json_lines(&output)[0]["user_id"].as_str().unwrap().to_owned();

    // An unknown room, and a malformed one.
    let server = user_id.split_once(':').unwrap().1;
    assert_fails(&hush.run(&["send", &format!("!nowhere:{server}"), "hi"]), 5, "unknown room");
    assert_fails(&hush.run(&["send", "not-a-room", "hi"]), 2, "not a room id");
    let json_error = hush.run(&["--json", "history", &format!("!nowhere:{server}")]);
    let error: Value = serde_json::from_slice(&json_error.stderr).expect("a JSON error on stderr");
    assert_eq!((error["error"].as_str(), error["exit_code"].as_u64()), (Some("unknown_room"), Some(5)));

    // A wrong store passphrase.
    let mut wrong = hush.command(&["whoami"]);
    let output = wrong.env("HUSH_PASSPHRASE", "not the passphrase").output().unwrap();
    assert_eq!(exit_code(&output), 6, "{}", stderr(&output));

    // The store of another device: this account's store replaced by the
    // store of a second device of the same user.
    let other = Hush::new();
    other.json(&[
        "login",
        "--homeserver",
        &homeserver_url(),
        "--user",
        &user_id,
        "--device-id",
        "OTHER",
        "--no-identity",
    ]);
    let dir = hush.account_dir();
    let store = dir.join("crypto.redb");
    let own_store = std::fs::read(&store).unwrap();
    std::fs::copy(other.account_dir().join("crypto.redb"), &store).unwrap();
    let output = hush.run(&["whoami"]);
    assert_eq!(exit_code(&output), 6, "{}", stderr(&output));
    assert!(stderr(&output).contains("OTHER"), "names the store's device: {}", stderr(&output));
    std::fs::write(&store, own_store).unwrap();
    assert!(hush.run(&["whoami"]).status.success(), "its own store opens again");

    // A missing store: refused, never replaced by a new identity.
    std::fs::remove_file(&store).unwrap();
    assert_fails(&hush.run(&["whoami"]), 3, "missing");
    assert!(!Path::new(&store).exists(), "no new store was made");
    // Logout still works, and removes the account.
    assert!(hush.run(&["logout"]).status.success());
    assert_fails(&hush.run(&["whoami"]), 3, "not logged in");
}

/// The JSON objects a command printed, and its exit code.
fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `hush register` makes the account and its identity (recovery key shown
/// once); a second machine's `login` cannot finish the identity without
/// the key (exit 8) and says how; `recovery restore` with a wrong key is
/// exit 9 and changes nothing; with the right key the device is recovered
/// and `recovery status` is complete; `devices` shows both devices
/// cross-signed; `recovery reset` gives a new key and the old one stops
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn register_login_recovery_and_devices_live_by_cross_signing() {
    let first = Hush::new();
    let name = unique_name("dana");
    let registered = first.json(&["register", "--homeserver", &homeserver_url(), "--user", &name]);
    let user_id = registered[0]["user_id"].as_str().expect("registered").to_owned();
    assert_eq!(registered[1]["identity"], "created", "{registered:?}");
    let recovery_key = registered[1]["recovery_key"].as_str().expect("the recovery key, once").to_owned();
    let status = first.json(&["recovery", "status"]);
    assert_eq!(status[0]["complete"], true, "{status:?}");
    assert_eq!(first.json(&["login", "--homeserver", &homeserver_url(), "--user", &user_id])[1]["identity"], "ready");

    let second = Hush::new();
    let login = second.run(&[
        "--json",
        "login",
        "--homeserver",
        &homeserver_url(),
        "--user",
        &user_id,
        "--device-id",
        "SECOND",
    ]);
    assert_eq!(exit_code(&login), 8, "{}", stderr(&login));
    let error: Value = serde_json::from_str(stderr(&login).lines().last().unwrap()).unwrap();
    assert_eq!(error["error"], "identity_incomplete");
    assert!(error["message"].as_str().unwrap().contains("HUSH_RECOVERY_KEY"), "says what it needs: {error}");
    assert_eq!(second.json(&["recovery", "status"])[0]["this_device_cross_signed"], false);

    // A well-formed recovery key for secret storage that is not this account's.
    let other_key = hush_client::hush_crypto_core::secret_storage::SecretStorageKey::generate().unwrap().recovery_key();
    let wrong = second
        .command(&["--json", "recovery", "restore"])
        .env("HUSH_RECOVERY_KEY", other_key.as_str())
        .output()
        .unwrap();
    assert_eq!(exit_code(&wrong), 9, "{}", stderr(&wrong));
    assert_eq!(second.json(&["recovery", "status"])[0]["private_keys"], false, "a wrong key changed nothing");
    let restored =
        second.command(&["--json", "recovery", "restore"]).env("HUSH_RECOVERY_KEY", &recovery_key).output().unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(json_lines(&restored)[0]["identity"], "recovered");
    assert_eq!(second.json(&["recovery", "status"])[0]["complete"], true);

    let devices = first.json(&["devices"]);
    assert_eq!(devices[0]["identity"], "verified", "our own identity: {devices:?}");
    let listed: Vec<&Value> = devices.iter().filter(|d| d["device_id"].is_string()).collect();
    assert!(listed.len() >= 2 && listed.iter().all(|d| d["cross_signed"] == true), "{devices:?}");

    let reset = first.json(&["recovery", "reset"]);
    let new_key = reset[0]["recovery_key"].as_str().expect("a new key").to_owned();
    assert_ne!(new_key, recovery_key);
    let third = Hush::new();
    let login = ["--json", "login", "--homeserver", &homeserver_url(), "--user", &user_id, "--device-id", "THIRD"];
    let old = third.command(&login).env("HUSH_RECOVERY_KEY", &recovery_key).output().unwrap();
    assert_eq!(exit_code(&old), 9, "the old key opens nothing: {}", stderr(&old));
    let new = third.command(&["--json", "recovery", "restore"]).env("HUSH_RECOVERY_KEY", &new_key).output().unwrap();
    assert!(new.status.success(), "the new key works: {}", stderr(&new));
}

/// Reads a spawned `hush --json` process's lines until one has `event`.
fn until_event(lines: &mut impl Iterator<Item = std::io::Result<String>>, event: &str) -> Value {
    for line in lines {
        let line = line.expect("a line");
        let value: Value = serde_json::from_str(&line).unwrap_or_default();
        if value["event"] == event {
            return value;
        }
    }
    panic!("the process ended before {event:?}")
}

/// Alice runs `hush verify BOB`, Bob `hush verify --accept`: both show the
/// same seven emoji (with names) and numbers, both answer `y`, both end
/// verified, and Alice's `devices BOB` shows Bob's identity verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn two_hush_processes_verify_each_other_by_sas() {
    use std::io::Write;
    let (alice, bob) = (Hush::new(), Hush::new());
    alice.new_account("alice").await;
    let bob_id = bob.new_account("bob").await;
    let spawn = |hush: &Hush, args: &[&str]| {
        hush.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut accepting = spawn(&bob, &["--json", "verify", "--accept", "--timeout", "120"]);
    let mut asking = spawn(&alice, &["--json", "verify", &bob_id, "--timeout", "120"]);
    let mut bob_lines = BufReader::new(accepting.stdout.take().unwrap()).lines();
    let mut alice_lines = BufReader::new(asking.stdout.take().unwrap()).lines();
    let bob_sas = until_event(&mut bob_lines, "sas");
    let alice_sas = until_event(&mut alice_lines, "sas");
    assert_eq!(alice_sas["emoji"].as_array().map(Vec::len), Some(7), "{alice_sas}");
    assert!(alice_sas["emoji"][0]["name"].is_string(), "the emoji come with their names");
    assert_eq!(alice_sas["emoji"], bob_sas["emoji"], "the same emoji on both");
    assert_eq!(alice_sas["decimals"], bob_sas["decimals"]);
    for process in [&mut accepting, &mut asking] {
        process.stdin.as_mut().unwrap().write_all(b"y\n").unwrap();
    }
    assert_eq!(until_event(&mut alice_lines, "done")["verified"], true);
    assert_eq!(until_event(&mut bob_lines, "done")["verified"], true);
    assert!(asking.wait().unwrap().success() && accepting.wait().unwrap().success());
    let seen = alice.json(&["devices", &bob_id]);
    assert_eq!(seen[0]["identity"], "verified", "{seen:?}");
}

/// `verify BOB --qr`: once Bob's device accepted, Alice's terminal shows a
/// QR code (half-block characters, on stderr: it holds the flow's secret,
/// so it is never in the JSON) and she waits for the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn verify_with_qr_draws_a_code_in_the_terminal() {
    let (alice, bob) = (Hush::new(), Hush::new());
    alice.new_account("alice").await;
    let bob_id = bob.new_account("bob").await;
    let mut accepting =
        bob.command(&["--json", "verify", "--accept", "--timeout", "60"]).stdout(Stdio::null()).spawn().unwrap();
    let mut asking = alice
        .command(&["--json", "verify", &bob_id, "--qr", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(asking.stdout.take().unwrap()).lines();
    let shown = until_event(&mut lines, "qr_shown");
    assert_eq!(shown["user_id"], bob_id.as_str());
    assert!(shown.get("qr").is_none() && shown.get("secret").is_none(), "nothing of the code in the JSON: {shown}");
    for process in [&mut asking, &mut accepting] {
        process.kill().unwrap();
        process.wait().unwrap();
    }
    let mut drawn = String::new();
    std::io::Read::read_to_string(&mut asking.stderr.take().unwrap(), &mut drawn).unwrap();
    let modules = drawn.chars().filter(|c| matches!(c, '█' | '▀' | '▄')).count();
    assert!(modules > 100, "a QR code was drawn: {drawn}");
}
