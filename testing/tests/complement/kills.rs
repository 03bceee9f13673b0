//! The client kill stress (issue 15's SIGKILL harness): Alice's device runs
//! in a child process (`client-child stress`, encrypted redb store) and is
//! SIGKILLed at seeded points across five kill sites, round after round,
//! while Bob keeps sending to her and she to him. Each kill asserts it
//! landed where intended (a held response, or the child's own marker).
//! After the last round her device is restored in this process and the
//! whole room, read raw from the server, is checked: every room key
//! survived (her engine and Bob's each decrypt every event, his and hers),
//! no Megolm ratchet state was reused (no two events share a session and
//! index, and no index is refused as replayed), no one-time-key upload was
//! refused as a duplicate, and her backup holds every session of the room.
//!
//! `HUSH_CLIENT_KILLS` kills (10 by default, two per site); `cargo xtask
//! stress` runs 1,000. `HUSH_KILL_SEED` picks the schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;

use hush_testing::Seeded;
use hush_testing::proxy::{Calls, Fault, Rule, RuleHandle};
use ruma_client_api::backup::get_backup_keys;
use ruma_client_api::room::create_room::v3::RoomPreset;
use ruma_common::serde::Raw;
use serde_json::{Value, json};

use super::restarts::{child, has_encrypted_to_device};
use super::*;

/// Where a run's kill lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    /// The sync response carrying a new room key was delivered, and the
    /// child had not finished that sync.
    AfterSyncResponse,
    /// Inside a store write (the child's write stalls after some ops).
    InsideStoreWrite,
    /// Bob claimed her one-time keys until she made and uploaded more: the
    /// server stored them; the response never came back.
    BeforeKeysUploadResponse,
    /// Her `m.room.encrypted` to-device request (room keys for Bob, or one
    /// left unsent by the last kill and made again) reached the server; its
    /// answer is held.
    DuringKeySharing,
    /// The server stored a backup batch; the response never came back.
    DuringBackupUpload,
}

const SITES: [Site; 5] = [
    Site::AfterSyncResponse,
    Site::InsideStoreWrite,
    Site::BeforeKeysUploadResponse,
    Site::DuringKeySharing,
    Site::DuringBackupUpload,
];

fn kills() -> usize {
    std::env::var("HUSH_CLIENT_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

fn seed() -> u64 {
    std::env::var("HUSH_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_c0de)
}

/// What one run's child reported before its kill.
#[derive(Debug, Default)]
struct Reported {
    lines: Vec<String>,
}

impl Reported {
    fn drain(&mut self, lines: &Receiver<String>) {
        self.lines.extend(lines.try_iter());
    }

    /// Everything the child printed, once it is dead: the reader thread
    /// ends at the end of its stdout, which closes the channel.
    fn drain_to_end(&mut self, lines: &Receiver<String>) {
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
            self.lines.push(line);
        }
    }

    fn count(&self, line: &str) -> usize {
        self.lines.iter().filter(|l| *l == line).count()
    }
}

/// SIGKILLs the child and reaps it (off the async workers: the proxy runs
/// on them).
fn kill(process: std::process::Child) {
    tokio::task::block_in_place(|| restarts::kill(process));
}

/// Waits (at most 60 s) for a line starting with `prefix`, keeping every
/// line (off the async workers).
fn wait_line(lines: &Receiver<String>, reported: &mut Reported, prefix: &str, round: usize) {
    tokio::task::block_in_place(|| wait_line_blocking(lines, reported, prefix, round));
}

fn wait_line_blocking(lines: &Receiver<String>, reported: &mut Reported, prefix: &str, round: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = lines.recv_timeout(left) else { break };
        let found = line.starts_with(prefix);
        reported.lines.push(line);
        if found {
            return;
        }
    }
    panic!("round {round}: the child never printed {prefix:?}; it printed {:?}", reported.lines);
}

/// The run's proxy rules for `site`, on Alice's requests only.
fn rules(net: &Net, site: Site, token: &str) -> Vec<RuleHandle> {
    let one = Calls::Nth(1);
    match site {
        Site::AfterSyncResponse => vec![net.proxy.add(
            // Counted among the responses that carry one, so not by call.
            Rule::path("/sync").token(token).response_json(has_encrypted_to_device).fault(Fault::Hold),
        )],
        Site::InsideStoreWrite => Vec::new(),
        // Bob claims her one-time keys (see `claim_until_upload`), so she
        // uploads more; the upload's response is held.
        Site::BeforeKeysUploadResponse => {
            vec![net.proxy.add(Rule::path("/keys/upload").token(token).calls(one).fault(Fault::Hold))]
        }
        Site::DuringKeySharing => vec![net.proxy.add(
            Rule::path("/sendToDevice/m.room.encrypted/").method("PUT").token(token).calls(one).fault(Fault::Hold),
        )],
        Site::DuringBackupUpload => {
            vec![net.proxy.add(Rule::path("/room_keys/keys").method("PUT").token(token).calls(one).fault(Fault::Hold))]
        }
    }
}

/// Waits (at most 60 s) until the child finished one more sync or the
/// rule holds a response.
async fn until_next_sync_or_held(lines: &Receiver<String>, reported: &mut Reported, rule: &RuleHandle, round: usize) {
    reported.drain(lines);
    let synced = reported.count("synced");
    for _ in 0..6000 {
        reported.drain(lines);
        if reported.count("synced") > synced || rule.caught() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("round {round}: no sync finished and none was held within 60 s: {:?}", reported.lines);
}

/// Waits (at most 60 s) until `rule` holds a response (the server has
/// answered it); a failure names the run and what the child printed.
async fn until_held(rule: &RuleHandle, lines: &Receiver<String>, reported: &mut Reported, run: &Run<'_>) {
    if rule.wait_held_for(Duration::from_secs(60)).await {
        return;
    }
    reported.drain(lines);
    let Run { round, site, late, .. } = run;
    let (matched, caught) = (rule.matched(), rule.caught());
    panic!(
        "round {round} ({site:?}, late {late}): nothing held within 60 s ({matched} requests matched the rule, \
         {caught} caught); the child printed {:?}",
        reported.lines
    );
}

/// Bob claims Alice's one-time keys, one every 100 ms, until she uploads
/// (the rule sees her upload): she tops the server up only once it holds
/// fewer than her target, and it may hold more (at most 100 claims).
async fn claim_until_upload(
    bob: &TestClient,
    (user, device): (&ruma_common::UserId, &ruma_common::DeviceId),
    upload: &RuleHandle,
    round: usize,
) {
    for _ in 0..100 {
        if upload.matched() > 0 {
            return;
        }
        assert!(claim_key_of(bob, user, device).await.is_some(), "round {round}: alice had no one-time key left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("round {round}: alice uploaded no key after 100 of hers were claimed");
}

/// One run's plan.
struct Run<'a> {
    site: Site,
    round: usize,
    /// Milliseconds between delivering the sync response and the kill.
    delay_ms: u64,
    /// Armed only after the child sent a message of its own (and Bob
    /// another), so her own room keys and messages are in play too.
    late: bool,
    token: &'a str,
    /// Her user and device.
    alice: (&'a ruma_common::UserId, &'a ruma_common::DeviceId),
}

/// One run: starts the child, kills it at `run.site`, asserts the kill
/// landed there, and removes the run's rules. For the after-sync site,
/// returns whether the child had not finished that sync when killed.
async fn run_and_kill(net: &Net, bob: &TestClient, room: &OwnedRoomId, args: &[&str], run: &Run<'_>) -> bool {
    let Run { site, round, delay_ms, late, token, alice } = *run;
    let (process, lines) = child(net, args);
    let mut reported = Reported::default();
    if late {
        wait_line(&lines, &mut reported, "sent ", round);
    }
    let rules = rules(net, site, token);
    if site == Site::BeforeKeysUploadResponse {
        claim_until_upload(bob, alice, &rules[0], round).await;
    }
    if late {
        if site == Site::AfterSyncResponse {
            // A sync begun before the rule would deliver Bob's next key
            // unheld: wait for one that began after it (or one it held).
            until_next_sync_or_held(&lines, &mut reported, &rules[0], round).await;
        }
        send(bob, room, &format!("bob {round} again")).await;
    }
    match site {
        Site::InsideStoreWrite => wait_line(&lines, &mut reported, "stalled inside a write", round),
        Site::AfterSyncResponse => {
            until_held(&rules[0], &lines, &mut reported, run).await;
            reported.drain(&lines);
            let synced_before = reported.count("synced");
            rules[0].release();
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(delay_ms)));
            kill(process);
            reported.drain_to_end(&lines);
            assert_eq!(rules[0].caught(), 1, "round {round}: the room key's sync response was delivered");
            rules[0].remove();
            // Whether the child was still handling the sync (not asserted:
            // how far it got in a few milliseconds is the machine's business).
            return reported.count("synced") == synced_before;
        }
        // The request may come while the session is restored (an upload
        // left unanswered by the last kill is made again): no "opened" yet.
        _ => until_held(rules.last().expect("a rule"), &lines, &mut reported, run).await,
    }
    kill(process);
    reported.drain_to_end(&lines);
    assert!(rules.iter().all(|r| r.caught() <= 1), "round {round}: one fault per rule");
    if site == Site::BeforeKeysUploadResponse {
        // The held upload reached Synapse, and Synapse took it.
        let statuses = rules[0].upstream_statuses();
        assert_eq!(statuses, [200], "round {round}: the held key upload was refused (a duplicate one-time key?)");
    }
    // The held response is let go now that nobody reads it: the server acted.
    for rule in rules {
        rule.remove();
    }
    true
}

/// Alice, killed at 5 sites in turn (seeded order and timing), loses no
/// room key, reuses no ratchet, uploads no duplicate one-time key, and
/// backs up every session: see the module doc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local Synapse: run `cargo xtask test`"]
async fn a_client_killed_at_seeded_points_loses_no_room_key() {
    let (kills, mut random) = (kills(), Seeded(seed()));
    let net = Net::start().await;
    let (alice, bob) = (net.user("alice", "ALICE1").await, net.user("bob", "BOB1").await);
    let (_, password) = alice.credentials.clone();
    alice
        .client
        .encryption()
        .enable_recovery(hush_client::RecoveryOptions::new().account_password(&password))
        .await
        .expect("alice's backup");
    let room = create_room(&bob, RoomPreset::TrustedPrivateChat, json!({"rotation_period_msgs": 1}), &[&alice]).await;
    alice.join(&room).await;
    until_recipients(&bob, &room, 2).await;
    let session = serde_json::to_string(&alice.session).unwrap();
    let token = alice.session.access_token.clone();
    let (alice_user, alice_device) = (alice.session.user_id.clone(), alice.session.device_id.clone());
    let store = TestClient::store_path(StoreKind::Redb, &alice.dir);
    let (dir, credentials) = alice.close();

    let mut sites = BTreeMap::<String, usize>::new();
    // After-sync kills that landed once the child had finished that sync,
    // and while it had not.
    let mut after_sync = [0usize; 2];
    for round in 0..kills {
        // Each site early and late before the seed picks, so short runs cover all.
        let (site, late) = if round < 2 * SITES.len() {
            (SITES[round / 2], round % 2 == 1)
        } else {
            (SITES[random.below(5) as usize], random.below(2) == 1)
        };
        send(&bob, &room, &format!("bob {round}")).await;
        let store_site = match (site, late) {
            (Site::InsideStoreWrite, false) => format!("write:{}", random.below(4)),
            (Site::InsideStoreWrite, true) => format!("write-late:{}", random.below(4)),
            _ => "-".to_owned(),
        };
        let args = ["stress", store.to_str().unwrap(), &session, room.as_str(), &store_site];
        let run =
            Run { site, round, delay_ms: random.below(6), late, token: &token, alice: (&alice_user, &alice_device) };
        let mid_sync = run_and_kill(&net, &bob, &room, &args, &run).await;
        if site == Site::AfterSyncResponse {
            after_sync[usize::from(mid_sync)] += 1;
        }
        *sites.entry(format!("{site:?}{}", if late { " (late)" } else { "" })).or_default() += 1;
        // Bob takes his to-device messages (Alice's room keys) as he goes.
        bob.sync().await;
    }
    eprintln!("kills by site: {sites:?}");
    eprintln!("after-sync kills: {} before the child finished that sync, {} after", after_sync[1], after_sync[0]);

    // Through the proxy, so her uploads after the last kill are checked too.
    let alice = TestClient::login_restore_via(StoreKind::Redb, &dir, &credentials, &session, &net.proxy.url()).await;
    // Every to-device message waiting for either (a sync carries at most 100).
    alice.catch_up().await;
    bob.catch_up().await;
    alice.client.encryption().upload_backup(|_, _| ()).await.expect("backup upload");
    let (events, plain) = room_history(&bob, &room).await;
    assert_eq!(plain, 0, "messages were sent in the clear into the encrypted room");
    let bobs = events.iter().filter(|e| sender(e) == bob.session.user_id.as_str()).count();
    assert!(bobs >= kills, "the history holds bob's {kills} messages ({bobs})");
    let hers = events.len() - bobs;
    assert!(hers >= kills / 4, "alice sent too few messages for her keys to be tested: {hers}");
    let read_by_alice = decrypt_all(&alice, &room, &events).await;
    decrypt_all(&bob, &room, &events).await;
    let uploads = net.proxy.answers(Some("POST"), "/keys/upload");
    assert!(uploads.iter().all(|s| *s == 200), "a key upload was refused (a duplicate one-time key?): {uploads:?}");
    check_backup(&alice, &room, &read_by_alice).await;
    eprintln!("{} encrypted events ({hers} of alice's) read by both, {} key uploads", events.len(), uploads.len());
}

pub(crate) fn sender(event: &Raw<Value>) -> String {
    event.get_field::<String>("sender").ok().flatten().unwrap_or_default()
}

/// Every encrypted event of the room, oldest first, read raw from the
/// server (paginating `/messages` back to the room's creation), and how
/// many plain `m.room.message` events it holds.
pub(crate) async fn room_history(client: &TestClient, room: &OwnedRoomId) -> (Vec<Raw<Value>>, usize) {
    use ruma_client_api::message::get_message_events::v3::Request;
    use ruma_common::api::Direction;
    let mut events = Vec::new();
    let mut plain = 0;
    let mut from = None;
    loop {
        let mut request = Request::new(room.clone(), Direction::Backward);
        request.from = from.take();
        request.limit = 1000u32.into();
        let token = Some(client.session.access_token.as_str());
        let page = api(client).send(request, token, Duration::ZERO).await.expect("room messages");
        for event in page.chunk.iter().map(|e| e.clone().cast_unchecked::<Value>()) {
            match event.get_field::<String>("type").ok().flatten().as_deref() {
                Some("m.room.encrypted") => events.push(event),
                Some("m.room.message") => plain += 1,
                _ => {}
            }
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    events.reverse();
    (events, plain)
}

/// Decrypts every event with `client`'s engine: none may fail (a lost room
/// key, a replayed index), and no two events may share a session and index
/// (a reused ratchet state). Returns (event id, session, index) of each.
pub(crate) async fn decrypt_all(
    client: &TestClient,
    room: &OwnedRoomId,
    events: &[Raw<Value>],
) -> Vec<(String, String, u32)> {
    let machine = client.client.olm_machine().expect("engine");
    let settings = hush_crypto_core::DecryptionSettings::default();
    let results = machine.decrypt_room_events(events, room, &settings).await;
    let who = &client.session.user_id;
    let mut read = Vec::new();
    let mut used = BTreeMap::new();
    for (event, result) in events.iter().zip(results) {
        let id = event.get_field::<String>("event_id").ok().flatten().unwrap_or_default();
        let info = match result {
            Ok(decrypted) => decrypted.info,
            Err(error) => panic!("{who} cannot decrypt {id} from {}: {error}", sender(event)),
        };
        if let Some(other) = used.insert((info.session_id.clone(), info.message_index), id.clone()) {
            panic!("{other} and {id} share session {} index {}: a reused ratchet", info.session_id, info.message_index);
        }
        read.push((id, info.session_id, info.message_index));
    }
    read
}

/// Alice's backup holds every Megolm session used in the room.
async fn check_backup(alice: &TestClient, room: &OwnedRoomId, read: &[(String, String, u32)]) {
    let version = alice.client.olm_machine().unwrap().backup_version().expect("backup enabled after the kills");
    let request = get_backup_keys::v3::Request::new(version);
    let response = api(alice).send(request, Some(&alice.session.access_token), Duration::ZERO).await.expect("backup");
    let backed_up: BTreeSet<String> =
        response.rooms.get(room).map(|r| r.sessions.keys().cloned().collect()).unwrap_or_default();
    let used: BTreeSet<String> = read.iter().map(|(_, session, _)| session.clone()).collect();
    let missing: Vec<_> = used.difference(&backed_up).collect();
    assert!(missing.is_empty(), "sessions missing from the backup: {missing:?}");
}
