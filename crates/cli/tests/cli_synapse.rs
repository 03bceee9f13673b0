//! The `hush` binary against a real Synapse (started by `cargo xtask
//! test`): two accounts talking through `send` and `listen --json`, keys
//! moved between devices with `export-keys` / `import-keys`, and the exit
//! code of each error.

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
    second.json(&["login", "--homeserver", &homeserver_url(), "--user", &alice_id, "--device-id", "SECOND"]);
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
    let user_id = serde_json::from_slice::<Value>(&output.stdout).unwrap()["user_id"].as_str().unwrap().to_owned();

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
    other.json(&["login", "--homeserver", &homeserver_url(), "--user", &user_id, "--device-id", "OTHER"]);
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
