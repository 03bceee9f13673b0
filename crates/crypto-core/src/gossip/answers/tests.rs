use std::time::Duration;

use ruma_common::{OwnedDeviceId, owned_room_id};

use super::*;

fn device(n: usize) -> OwnedDeviceId {
    format!("DEVICE{n}").into()
}

fn key_answer(n: usize) -> Answer {
    Answer::new(device(n), format!("req{n}"), Asked::RoomKey(owned_room_id!("!room:example.org"), format!("s{n}")))
}

fn secret_answer(n: usize) -> Answer {
    Answer::new(device(n), format!("req{n}"), Asked::Secret("m.megolm_backup.v1".to_owned()))
}

fn at(secs: u64) -> Timestamp {
    Timestamp::EPOCH.saturating_add(Duration::from_secs(secs))
}

#[test]
fn an_answer_waits_for_a_session_at_most_max_wait_tries_times() {
    let mut kept = KeptAnswers::default();
    let mut answer = secret_answer(1);
    for round in 1..=MAX_WAIT_TRIES {
        assert!(kept.wait_for_session(answer.clone()), "try {round} is kept");
        let ready = kept.take_ready(|_| false);
        assert_eq!(ready.len(), 1);
        answer = ready.into_iter().next().unwrap_or_else(|| secret_answer(0));
    }
    assert!(!kept.wait_for_session(answer), "one more wait than allowed is dropped");
    assert!(kept.take_ready(|_| false).is_empty());
}

#[test]
fn an_answer_stays_waiting_while_its_devices_claim_is_in_flight() {
    let mut kept = KeptAnswers::default();
    assert!(kept.wait_for_session(secret_answer(1)));
    assert!(kept.wait_for_session(secret_answer(2)));
    let ready = kept.take_ready(|d| *d == *device(1));
    assert_eq!(ready, vec![Answer { tries: 1, ..secret_answer(2) }]);
    assert_eq!(kept.waiting_devices(), HashSet::from([device(1)]), "the device being claimed still waits");
}

#[test]
fn waiting_answers_are_bounded_and_the_oldest_gives_way() {
    let mut kept = KeptAnswers::default();
    for n in 0..=MAX_WAITING {
        assert!(kept.wait_for_session(secret_answer(n)));
    }
    let devices = kept.waiting_devices();
    assert_eq!(devices.len(), MAX_WAITING);
    assert!(!devices.contains(&device(0)), "the oldest was dropped");
    assert!(devices.contains(&device(MAX_WAITING)));
}

#[test]
fn the_same_request_waits_once() {
    let mut kept = KeptAnswers::default();
    assert!(kept.wait_for_session(secret_answer(1)));
    assert!(kept.wait_for_session(secret_answer(1)));
    assert_eq!(kept.take_ready(|_| false).len(), 1);
}

#[test]
fn a_withdrawn_request_is_answered_neither_after_a_claim_nor_for_a_better_key() {
    let mut kept = KeptAnswers::default();
    assert!(kept.wait_for_session(key_answer(1)));
    kept.await_better_key(key_answer(1), at(0), Some(5));
    kept.await_better_key(key_answer(2), at(0), None);
    kept.withdraw("req1", &device(1));
    assert!(kept.take_ready(|_| false).is_empty());
    let awaiting: Vec<String> = kept.awaiting_keys(at(1)).into_iter().map(|k| k.answer.request_id).collect();
    assert_eq!(awaiting, vec!["req2".to_owned()], "only the withdrawn request is gone");
    kept.withdraw("req2", &device(3));
    assert_eq!(kept.awaiting_keys(at(1)).len(), 1, "another device cannot withdraw a request it did not make");
}

#[test]
fn a_secret_request_is_not_kept_for_a_better_key() {
    let mut kept = KeptAnswers::default();
    kept.await_better_key(secret_answer(1), at(0), None);
    assert!(kept.awaiting_keys(at(0)).is_empty());
}

#[test]
fn a_kept_key_request_expires_after_its_time_counted_from_the_first_keep() {
    let mut kept = KeptAnswers::default();
    kept.await_better_key(key_answer(1), at(0), None);
    // Kept again (we sent a copy meanwhile): the time still counts from the first.
    kept.await_better_key(key_answer(1), at(3600), Some(4));
    let kept_for = AWAITING_KEY_FOR.as_secs();
    let awaiting = kept.awaiting_keys(at(kept_for - 1));
    assert_eq!(awaiting.len(), 1);
    assert_eq!(awaiting[0].sent_from, Some(4), "the later entry replaced the earlier");
    assert!(kept.awaiting_keys(at(kept_for)).is_empty(), "expired counting from the first keep");
}

#[test]
fn kept_key_requests_are_bounded() {
    let mut kept = KeptAnswers::default();
    for n in 0..=MAX_AWAITING_KEYS {
        kept.await_better_key(key_answer(n), at(0), None);
    }
    let awaiting = kept.awaiting_keys(at(0));
    assert_eq!(awaiting.len(), MAX_AWAITING_KEYS);
    assert!(awaiting.iter().all(|k| k.answer.request_id != "req0"), "the oldest gave way");
}

#[test]
fn a_copy_is_sent_again_only_if_it_starts_earlier_than_the_one_sent() {
    let mut kept = KeptAnswers::default();
    kept.await_better_key(key_answer(1), at(0), Some(10));
    kept.await_better_key(key_answer(2), at(0), None);
    let awaiting = kept.awaiting_keys(at(0));
    let (sent, unsent) = (&awaiting[0], &awaiting[1]);
    assert!(sent.better_than_sent(9));
    assert!(!sent.better_than_sent(10), "the same copy is not sent twice");
    assert!(!sent.better_than_sent(11));
    assert!(unsent.better_than_sent(u32::MAX), "any copy answers a request we could not answer");
}

#[test]
fn the_copy_sent_for_a_request_is_remembered_until_it_is_withdrawn() {
    let mut kept = KeptAnswers::default();
    kept.await_better_key(key_answer(1), at(0), Some(7));
    kept.await_better_key(key_answer(2), at(0), None);
    assert_eq!(kept.sent_copy_from("req1", &device(1)), Some(7));
    assert_eq!(kept.sent_copy_from("req1", &device(2)), None, "another device's request with the same id");
    assert_eq!(kept.sent_copy_from("req2", &device(2)), None, "nothing was sent for it");
    kept.withdraw("req1", &device(1));
    assert_eq!(kept.sent_copy_from("req1", &device(1)), None);
}
