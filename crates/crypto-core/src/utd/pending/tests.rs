use ruma_common::room_id;
use serde_json::json;

use super::*;

fn room() -> OwnedRoomId {
    "!r:e.org".try_into().unwrap()
}

/// An encrypted event `n` of session `session`, padded to about `pad` bytes.
fn event(n: usize, session: &str, pad: usize) -> PendingEvent {
    let value = json!({
        "event_id": format!("$e{n}"),
        "sender": "@alice:e.org",
        "type": "m.room.encrypted",
        "content": {"session_id": session, "ciphertext": "x".repeat(pad)},
    });
    let raw = serde_json::value::to_raw_value(&value).unwrap();
    PendingEvent::from_event(&room(), &raw, DecryptionSettings::default()).unwrap()
}

fn key(n: usize) -> (OwnedRoomId, String) {
    (room(), format!("s{n}"))
}

fn holding(sessions: impl IntoIterator<Item = usize>) -> PendingDecryptions {
    let mut pending = PendingDecryptions::default();
    for n in sessions {
        pending.record(event(n, &format!("s{n}"), 0));
    }
    pending
}

#[test]
fn an_event_is_kept_once_and_the_oldest_go_first_over_the_count() {
    let mut pending = PendingDecryptions::default();
    pending.record(event(0, "s0", 0));
    pending.record(event(0, "s0", 0));
    assert_eq!(pending.len(), 1, "the same event once");
    for n in 1..=MAX_PENDING {
        pending.record(event(n, "s1", 0));
    }
    assert_eq!(pending.len(), MAX_PENDING);
    assert!(pending.select(|e| e.session_id == "s0").is_empty(), "the oldest was dropped");
    pending.record(event(0, "s0", 0));
    assert_eq!(pending.select(|e| e.session_id == "s0").len(), 1, "a dropped event may wait again");
}

#[test]
fn large_events_are_bounded_by_bytes_and_oversized_ones_are_not_kept() {
    let mut pending = PendingDecryptions::default();
    for n in 0..400 {
        pending.record(event(n, "s", 60_000));
    }
    assert!(pending.bytes <= MAX_PENDING_BYTES, "{} bytes held", pending.bytes);
    assert!(pending.len() < 400 && pending.len() > 200, "{} held", pending.len());
    assert!(pending.select(|e| e.event_id == "$e399").len() == 1, "the newest is kept");
    let huge = serde_json::value::to_raw_value(&json!({
        "event_id": "$huge", "sender": "@a:e.org", "content": {"session_id": "s", "c": "x".repeat(70_000)}
    }))
    .unwrap();
    assert!(PendingEvent::from_event(&room(), &huge, DecryptionSettings::default()).is_none());
    let nameless = serde_json::value::to_raw_value(&json!({"sender": "@a:e.org", "content": {}})).unwrap();
    assert!(PendingEvent::from_event(&room(), &nameless, DecryptionSettings::default()).is_none());
}

#[test]
fn a_decrypted_event_waits_no_more() {
    let mut pending = holding(0..3);
    pending.take_record();
    assert!(!pending.resolved(room_id!("!other:e.org"), "$e1"), "an event id counts in its room");
    assert!(pending.resolved(&room(), "$e1"));
    assert!(!pending.resolved(&room(), "$e1"), "once");
    assert!(!pending.resolved(&room(), "$unknown"));
    let left: Vec<String> = pending.select(|_| true).into_iter().map(|e| e.event_id).collect();
    assert_eq!(left, ["$e0", "$e2"]);
    assert_eq!(pending.bytes, pending.events.iter().map(PendingEvent::bytes).sum::<usize>());
    assert!(pending.take_record().is_some(), "the change is saved");
}

#[test]
fn missing_keys_are_asked_once_per_open_request_and_at_most_twenty_per_round() {
    let mut pending = holding(0..30);
    // Two events of one session ask once.
    pending.record(event(100, "s0", 0));
    let open = |_: &RoomId, session: &str| session == "s1";
    let now = Timestamp::from_millis(1_000_000);
    assert_eq!(pending.key_requests_deadline(open, false), Some(Timestamp::EPOCH), "due at once");
    let due = pending.take_key_requests(now, open, false);
    assert_eq!(due.len(), KEY_REQUESTS_PER_ROUND);
    assert_eq!(due[0], key(0));
    assert_eq!(due[1], key(2), "s1 has a request open");
    assert_eq!(due.iter().collect::<BTreeSet<_>>().len(), due.len(), "each key once");
    let later = now.saturating_add(ROUND_INTERVAL);
    let next = pending.take_key_requests(later, open, false);
    assert_eq!(next.len(), 30 - 1 - KEY_REQUESTS_PER_ROUND, "the next round takes the rest");
    assert!(next.iter().all(|k| !due.contains(k)));
    assert!(pending.take_key_requests(later, open, false).is_empty(), "every key was asked");
}

#[test]
fn an_asked_key_is_asked_again_with_a_doubling_wait_and_at_once_when_a_device_of_ours_appears() {
    let mut pending = holding([0]);
    let never_open = |_: &RoomId, _: &str| false;
    let at = |secs: u64| Timestamp::from_millis(secs * 1000);
    let first = KEY_REASK_FIRST.as_secs();
    assert_eq!(pending.take_key_requests(at(0), never_open, false), [key(0)]);
    assert_eq!(pending.key_requests_deadline(never_open, false), Some(at(first)));
    assert!(pending.take_key_requests(at(first - 1), never_open, false).is_empty(), "waits");
    assert_eq!(pending.take_key_requests(at(first), never_open, false), [key(0)], "asked again after the wait");
    assert_eq!(pending.key_requests_deadline(never_open, false), Some(at(3 * first)), "the wait doubled");
    assert_eq!(pending.key_requests_deadline(|_, _| true, false), None, "nothing to ask while a request is open");
    pending.own_devices_changed();
    assert_eq!(pending.key_requests_deadline(never_open, false), Some(Timestamp::EPOCH));
    for n in 0..40 {
        pending.take_key_requests(at(n * KEY_REASK_MAX.as_secs()), never_open, false);
    }
    let last = at(39 * KEY_REASK_MAX.as_secs());
    assert_eq!(pending.key_requests_deadline(never_open, false), Some(last.saturating_add(KEY_REASK_MAX)), "capped");
}

#[test]
fn events_are_retried_when_their_key_is_stored_or_their_sender_changes_and_all_once_after_a_restart() {
    let mut pending = holding(0..3);
    assert!(!pending.retry_due());
    pending.keys_arrived(["s1", "unrelated"]);
    assert!(pending.retry_due());
    let retried: Vec<String> = pending.take_retries().into_iter().map(|e| e.event_id).collect();
    assert_eq!(retried, ["$e1"]);
    assert!(!pending.retry_due(), "taken once");
    assert_eq!(pending.len(), 3, "still waiting until a decryption succeeds");
    pending.keys_arrived(["unrelated"]);
    pending.sender_changed(&"@nobody:e.org".try_into().unwrap());
    assert!(!pending.retry_due(), "keys and senders no event waits for");
    pending.sender_changed(&"@alice:e.org".try_into().unwrap());
    assert_eq!(pending.take_retries().len(), 3);
    let (_, record) = pending.take_record().unwrap();
    let restarted = PendingDecryptions::from_record(Some(&record));
    assert!(restarted.retry_due(), "a key may have arrived just before the engine stopped");
    assert!(!PendingDecryptions::from_record(None).retry_due());
}

#[test]
fn an_unreadable_backup_answer_holds_the_next_read_until_the_recheck() {
    let mut pending = holding([0]);
    let now = Timestamp::from_millis(5_000);
    assert_eq!(pending.backup_read_deadline(), Some(Timestamp::EPOCH));
    pending.backup_read_fruitless(now);
    assert_eq!(pending.backup_read_deadline(), Some(now.saturating_add(BACKUP_RECHECK)));
    assert_eq!(pending.backup_read_due(now), None);
    assert!(pending.backup_read_due(now.saturating_add(BACKUP_RECHECK)).is_some());
}

#[test]
fn a_key_is_looked_up_once_per_state_of_the_backup_and_rechecked_at_most_every_ten_minutes() {
    let start = Timestamp::from_millis(1_000_000);
    let later = |secs: u64| Timestamp::from_millis(1_000_000 + secs * 1000);
    let fresh = Some(BackupReadDue { recheck: false });
    let recheck = Some(BackupReadDue { recheck: true });
    let mut pending = holding([0]);
    assert_eq!(pending.backup_read_due(start), fresh, "never looked up");
    assert_eq!(pending.take_backup_lookups(("1", "etag1"), BackupReadDue { recheck: false }, start), vec![key(0)]);
    // Looked up, nothing new: the recheck is due at once (never checked),
    // but the same etag brings no new lookup.
    assert_eq!(pending.backup_read_due(start), recheck);
    assert!(pending.take_backup_lookups(("1", "etag1"), BackupReadDue { recheck: true }, start).is_empty());
    // Within ten minutes of that check the backup is not read again.
    assert_eq!(pending.backup_read_due(later(599)), None);
    // After ten minutes, a changed backup: looked up again, once.
    assert_eq!(pending.backup_read_due(later(600)), recheck);
    assert_eq!(pending.take_backup_lookups(("1", "etag2"), BackupReadDue { recheck: true }, later(600)), vec![key(0)]);
    assert!(pending.take_backup_lookups(("1", "etag2"), BackupReadDue { recheck: true }, later(1200)).is_empty());
    // A new key is looked up at once, whatever the recheck.
    pending.record(event(1, "s1", 0));
    assert_eq!(pending.backup_read_due(later(601)), fresh);
    assert_eq!(pending.take_backup_lookups(("1", "etag2"), BackupReadDue { recheck: false }, later(601)), vec![key(1)]);
    // A new backup version: its etags count anew, so every key is due.
    assert_eq!(
        pending.take_backup_lookups(("2", "etag2"), BackupReadDue { recheck: false }, later(602)),
        vec![key(0), key(1)]
    );
    // Nothing waits: no read at all.
    assert_eq!(PendingDecryptions::default().backup_read_due(later(9999)), None);
}

#[test]
fn backup_lookups_per_round_are_bounded() {
    let mut pending = holding(0..100);
    let now = Timestamp::from_millis(0);
    let first = pending.take_backup_lookups(("1", "e"), BackupReadDue { recheck: false }, now);
    assert_eq!(first.len(), BACKUP_LOOKUPS_PER_ROUND);
    let next = pending.take_backup_lookups(("1", "e"), BackupReadDue { recheck: false }, now);
    assert_eq!(next.len(), BACKUP_LOOKUPS_PER_ROUND);
    assert!(first.iter().all(|k| !next.contains(k)), "the next ones");
}

#[test]
fn the_newest_events_are_saved_when_changed_and_a_bad_record_reads_as_none() {
    let mut pending = PendingDecryptions::default();
    assert!(pending.take_record().is_none(), "nothing changed");
    for n in 0..MAX_SAVED + 10 {
        pending.record(event(n, &format!("s{n}"), 0));
    }
    let (name, record) = pending.take_record().expect("changed");
    assert_eq!(name, PENDING_RECORD);
    assert!(pending.take_record().is_none(), "saved");
    let restored = PendingDecryptions::from_record(Some(&record));
    assert_eq!(restored.len(), MAX_SAVED, "the newest are saved");
    assert_eq!(restored.select(|e| e.event_id == format!("$e{}", MAX_SAVED + 9)).len(), 1);
    assert!(restored.select(|e| e.event_id == "$e0").is_empty());
    assert_eq!(PendingDecryptions::from_record(Some(b"not json")).len(), 0);
    // A stored entry whose event disagrees with it is read from the event.
    let forged = json!([{
        "room_id": "!r:e.org", "event_id": "$claimed", "sender": "@mallory:e.org", "session_id": "s9",
        "event": {"event_id": "$real", "sender": "@alice:e.org", "content": {"session_id": "s1"}}
    }]);
    let restored = PendingDecryptions::from_record(Some(&serde_json::to_vec(&forged).unwrap()));
    let only = restored.select(|_| true);
    assert_eq!((only[0].event_id.as_str(), only[0].session_id.as_str()), ("$real", "s1"));
    assert_eq!(only[0].sender.as_str(), "@alice:e.org");
}

#[test]
fn the_saved_record_is_bounded_in_bytes_newest_first() {
    let mut pending = PendingDecryptions::default();
    for n in 0..100 {
        pending.record(event(n, "s", 30_000));
    }
    let (_, record) = pending.take_record().expect("changed");
    assert!(record.len() <= MAX_SAVED_BYTES + 64 * 1024, "{} bytes", record.len());
    let restored = PendingDecryptions::from_record(Some(&record));
    assert!(restored.len() < 100 && restored.len() >= 30, "{} saved", restored.len());
    assert_eq!(restored.select(|e| e.event_id == "$e99").len(), 1, "the newest is saved");
}

#[test]
fn an_announced_late_decryption_stays_in_the_saved_record_until_drained() {
    let mut pending = holding(0..2);
    pending.take_record();
    assert!(pending.resolved_until_drained(&room(), "$e0"));
    assert!(!pending.resolved_until_drained(&room(), "$e0"), "once");
    assert_eq!(pending.len(), 1, "it waits no more");
    let (_, record) = pending.take_record().expect("changed");
    let restarted = PendingDecryptions::from_record(Some(&record));
    assert_eq!(restarted.len(), 2, "a crash before the drain announces it again");
    pending.drained(&room(), "$e0");
    let (_, record) = pending.take_record().expect("the drain changed the record");
    let restarted = PendingDecryptions::from_record(Some(&record));
    let left: Vec<String> = restarted.select(|_| true).into_iter().map(|e| e.event_id).collect();
    assert_eq!(left, ["$e1"]);
    pending.drained(&room(), "$e0");
    assert!(pending.take_record().is_none(), "draining twice changes nothing");
}

#[test]
fn a_round_that_reaches_its_cap_holds_the_next_for_the_round_interval() {
    let mut pending = holding(0..(3 * KEY_REQUESTS_PER_ROUND));
    let never_open = |_: &RoomId, _: &str| false;
    let now = Timestamp::from_millis(1_000_000);
    assert_eq!(pending.take_key_requests(now, never_open, false).len(), KEY_REQUESTS_PER_ROUND);
    assert_eq!(pending.key_requests_deadline(never_open, false), Some(now.saturating_add(ROUND_INTERVAL)));
    assert!(pending.take_key_requests(now, never_open, false).is_empty(), "held");
    let next = now.saturating_add(ROUND_INTERVAL);
    assert_eq!(pending.take_key_requests(next, never_open, false).len(), KEY_REQUESTS_PER_ROUND);

    let fresh = BackupReadDue { recheck: false };
    assert_eq!(pending.take_backup_lookups(("1", "e"), fresh, now).len(), BACKUP_LOOKUPS_PER_ROUND);
    assert_eq!(pending.backup_read_due(now), None, "the next lookups wait for the round interval");
    assert_eq!(pending.backup_read_deadline(), Some(now.saturating_add(ROUND_INTERVAL)));
    assert!(pending.backup_read_due(next).is_some());
}

/// A key stored while an event of its session was failing to decrypt (a
/// history page racing a sync) must still retry that event.
#[test]
fn an_event_recorded_after_its_key_was_stored_is_retried() {
    let mut pending = PendingDecryptions::default();
    pending.keys_arrived(["s7"]);
    assert!(!pending.retry_due(), "nothing waits yet");
    pending.record(event(7, "s7", 0));
    assert!(pending.retry_due(), "the key was stored just before");
    assert_eq!(pending.take_retries().len(), 1);
    pending.record(event(8, "s8", 0));
    assert!(!pending.retry_due(), "a session whose key was not stored");
}

#[test]
fn with_a_readable_backup_a_key_is_asked_of_our_devices_only_after_the_backup_was_searched() {
    let mut pending = holding([0]);
    let never_open = |_: &RoomId, _: &str| false;
    let now = Timestamp::from_millis(1_000_000);
    assert_eq!(pending.key_requests_deadline(never_open, true), None, "the backup first");
    assert!(pending.take_key_requests(now, never_open, true).is_empty());
    pending.take_backup_lookups(("1", "e"), BackupReadDue { recheck: false }, now);
    assert_eq!(pending.key_requests_deadline(never_open, true), Some(Timestamp::EPOCH), "not in the backup");
    assert_eq!(pending.take_key_requests(now, never_open, true), [key(0)]);
}

#[test]
fn a_record_saved_by_another_process_joins_ours_and_everything_is_retried() {
    let mut ours = holding([1, 2]);
    let _ = ours.take_retries();
    let (_, theirs) = holding([2, 3]).take_record().expect("a record");
    ours.merge_stored(Some(&theirs));
    assert_eq!(ours.len(), 3, "ours and theirs, each event once");
    assert!(ours.retry_due());
    let retried: Vec<String> = ours.take_retries().into_iter().map(|e| e.event_id).collect();
    assert_eq!(retried, vec!["$e1".to_owned(), "$e2".to_owned(), "$e3".to_owned()]);
    assert!(ours.take_record().is_some(), "the merged registry is saved with the next batch");
    let mut empty = PendingDecryptions::default();
    empty.merge_stored(Some(b"not json"));
    assert!(!empty.retry_due(), "a bad record adds nothing and retries nothing");
}
