//! `state_synchronisation_test.go` and the restart scenario of
//! `to_device_test.go`: a client in a child process is SIGKILLed at a point
//! the fault proxy pins down (it holds the response the client waits for,
//! or reports the response it just delivered), then a new client on the
//! same store carries on.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use hush_testing::proxy::{Calls, Fault, Rule};
use hush_testing::synapse::{ClientOptions, StoreKind, register, unique_name};
use ruma_client_api::room::create_room::v3::RoomPreset;
use serde_json::{Value, json};

use super::*;

/// Starts the client child with `args`, talking to the proxy.
pub(crate) fn child(net: &Net, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_client-child"))
        .args(args)
        .env("HUSH_HOMESERVER_URL", net.proxy.url())
        .stdout(Stdio::piped())
        // HUSH_CHILD_STDERR=1 shows what the children say (a failing run's panic).
        .stderr(if std::env::var_os("HUSH_CHILD_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .expect("spawn the client child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

pub(crate) fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the child");
}

/// Alice's first login runs in a child process, killed while the server has
/// stored her keys but before the upload's response reached her. A new
/// client on the same store logs in again as the same device: its uploads
/// succeed, and her keys on the server are the ones in her store, so Bob's
/// message to her decrypts and hers to him.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestSigkillBeforeKeysUploadResponse() {
    let net = Net::start().await;
    let name = unique_name("alice");
    register(&name, "password").await.unwrap();
    let dir = Arc::new(tempfile::TempDir::new().unwrap());
    let store = TestClient::store_path(StoreKind::Redb, &dir);
    let held = net.proxy.add(Rule::path("/keys/upload").method("POST").calls(Calls::Nth(1)).fault(Fault::Hold));
    let (process, lines) = child(&net, &["login", "redb", store.to_str().unwrap(), &name, "password", "ALICE1"]);
    assert_eq!(lines.recv_timeout(Duration::from_secs(30)).as_deref(), Ok("logging in"));
    held.wait_held().await;
    kill(process);
    assert!(lines.try_iter().all(|l| l != "logged in"), "the child finished its login before the kill");
    assert_eq!(net.proxy.requests(Some("POST"), "/keys/upload"), 1, "killed waiting for the first upload");
    held.release();

    let alice =
        TestClient::login_with(&name, "password", "ALICE1", StoreKind::Redb, dir, ClientOptions::at(&net.proxy.url()))
            .await;
    alice.sync().await;
    let uploads = net.proxy.requests(Some("POST"), "/keys/upload");
    assert!(uploads >= 2, "the new client did not upload again ({uploads} uploads in all)");
    // The held answer went to the killed child, whose connection was gone
    // (it is recorded only if the proxy wrote it before noticing): every
    // upload of the new client was answered, and each succeeded (a one-time
    // key made again under a used id would be refused).
    let answers = net.proxy.answers(Some("POST"), "/keys/upload");
    assert!(answers.len() >= uploads - 1, "every upload after the restart was answered: {answers:?}");
    assert_eq!(held.upstream_statuses(), [200], "Synapse took the held upload");
    assert!(answers.iter().all(|s| *s == 200), "an upload after the restart failed: {answers:?}");

    let bob = net.user("bob", "BOB1").await;
    let room = create_room(&bob, RoomPreset::TrustedPrivateChat, json!({}), &[&alice]).await;
    alice.join(&room).await;
    until_recipients(&bob, &room, 2).await;
    let from_bob = send(&bob, &room, "to alice after her crash").await;
    decrypts(&alice, &room, &from_bob, "to alice after her crash").await;
    let from_alice = send(&alice, &room, "from alice after her crash").await;
    decrypts(&bob, &room, &from_alice, "from alice after her crash").await;
}

/// Whether a sync response carries an encrypted to-device event.
pub(crate) fn has_encrypted_to_device(body: &Value) -> bool {
    body.pointer("/to_device/events")
        .and_then(Value::as_array)
        .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.encrypted"))
}

/// Sends `n` `m.room_key_request` cancellations from `by` to every device
/// of `to`: noise before the room key, widening the window a kill can hit.
async fn noise(by: &TestClient, to: &ruma_common::UserId, n: usize) {
    use ruma_client_api::to_device::send_event_to_device::v3::Request;
    use ruma_common::to_device::DeviceIdOrAllDevices;
    for i in 0..n {
        let content = json!({"action": "request_cancellation", "requesting_device_id": "NOISE", "request_id": format!("noise{i}")});
        let devices = std::collections::BTreeMap::from([(
            DeviceIdOrAllDevices::AllDevices,
            Raw::new(&content).unwrap().cast_unchecked(),
        )]);
        let messages = std::collections::BTreeMap::from([(to.to_owned(), devices)]);
        let request = Request::new_raw("m.room_key_request".into(), ruma_common::TransactionId::new(), messages);
        api(by).send(request, Some(&by.session.access_token), Duration::ZERO).await.expect("to-device noise");
    }
}

/// Bob runs in a child process; its sync brings a new room key over
/// to-device and the child is killed: once with the response held (never
/// delivered), once right after it was delivered (killed while handling
/// it, or just after). Each time, Bob restarted from his store decrypts the
/// message under that key: the key was either saved with the sync's token
/// or is delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn TestUnprocessedToDeviceMessagesArentLostOnRestart() {
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let room = create_room(&alice, RoomPreset::TrustedPrivateChat, json!({"rotation_period_msgs": 1}), &[&bob]).await;
    bob.join(&room).await;
    until_recipients(&alice, &room, 2).await;
    let hello = send(&alice, &room, "Hello World!").await;
    decrypts(&bob, &room, &hello, "Hello World!").await;
    let session = serde_json::to_string(&bob.session).unwrap();
    let (token, bob_user) = (bob.session.access_token.clone(), bob.session.user_id.clone());
    let store = TestClient::store_path(StoreKind::Redb, &bob.dir);
    let (dir, credentials) = bob.close();

    for (variant, fault) in [("held", Fault::Hold), ("delivered", Fault::Delay(Duration::ZERO))] {
        noise(&alice, &bob_user, 20).await;
        let text = format!("Kick to make a new room key! ({variant})");
        let kick = send(&alice, &room, &text).await;
        let rule = net
            .proxy
            .add(Rule::path("/sync").token(&token).response_json(has_encrypted_to_device).fault(fault.clone()));
        let (process, _lines) = child(&net, &["redb", store.to_str().unwrap(), &session]);
        if fault == Fault::Hold {
            rule.wait_held().await;
        } else {
            rule.wait_caught(1).await;
        }
        kill(process);
        assert_eq!(rule.caught(), 1, "{variant}: the kill came with the to-device response");
        rule.remove();
        let restarted = TestClient::login_restore(StoreKind::Redb, &dir, &credentials, &session).await;
        decrypts(&restarted, &room, &kick, &text).await;
        drop(restarted);
    }
}
