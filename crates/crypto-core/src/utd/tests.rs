use super::*;

fn facts() -> UtdFacts {
    UtdFacts {
        membership: MembershipAtEvent::Member,
        event_ts: Some(2_000),
        device_created: 1_000,
        session_with_sender: true,
        requested_from_own_devices: false,
        backup: BackupAvailability::NotEnabled,
    }
}

fn missing(withheld: Option<WithheldCode>) -> MegolmError {
    MegolmError::MissingRoomKey { session_id: "s".into(), withheld }
}

#[test]
fn the_senders_withheld_code_wins_over_every_other_fact() {
    let facts = UtdFacts { membership: MembershipAtEvent::NotMember, session_with_sender: false, ..facts() };
    let cause = classify(&missing(Some(WithheldCode::Unverified)), &facts);
    assert_eq!(cause, UtdCause::Withheld { code: WithheldCode::Unverified });
}

#[test]
fn a_missing_key_for_an_event_sent_while_we_were_not_a_member_is_sent_before_we_joined() {
    let facts = UtdFacts { membership: MembershipAtEvent::NotMember, ..facts() };
    assert_eq!(classify(&missing(None), &facts), UtdCause::SentBeforeWeJoined);
    let partial = MegolmError::UnknownMessageIndex { first_known_index: 5, message_index: 2 };
    assert_eq!(classify(&partial, &facts), UtdCause::SentBeforeWeJoined);
}

#[test]
fn an_event_older_than_our_device_is_historical_with_the_backup_state() {
    let facts = UtdFacts { event_ts: Some(999), backup: BackupAvailability::NoDecryptionKey, ..facts() };
    let cause = classify(&missing(None), &facts);
    assert_eq!(cause, UtdCause::HistoricalMessage { backup: BackupAvailability::NoDecryptionKey });
}

#[test]
fn no_olm_session_with_the_sender_means_it_did_not_know_our_device() {
    let facts = UtdFacts { session_with_sender: false, ..facts() };
    assert_eq!(classify(&missing(None), &facts), UtdCause::NoSessionWithSender);
}

#[test]
fn a_key_missing_despite_a_session_is_not_received_with_the_healing_state() {
    let facts = UtdFacts { requested_from_own_devices: true, backup: BackupAvailability::Usable, ..facts() };
    let cause = classify(&missing(None), &facts);
    assert_eq!(
        cause,
        UtdCause::KeyNotReceived { requested_from_own_devices: true, backup: BackupAvailability::Usable }
    );
}

#[test]
fn a_later_first_index_is_a_partial_key_for_a_member() {
    let partial = MegolmError::UnknownMessageIndex { first_known_index: 5, message_index: 2 };
    assert_eq!(classify(&partial, &facts()), UtdCause::PartialKey { first_known_index: 5, message_index: 2 });
}

#[test]
fn trust_and_refusals_map_to_their_causes() {
    let requirement = TrustRequirement::CrossSigned;
    let insufficient = MegolmError::InsufficientSenderTrust { requirement };
    assert_eq!(classify(&insufficient, &facts()), UtdCause::SenderNotTrusted { requirement });
    let unverified = classify(&MegolmError::UnverifiedSenderDevice, &facts());
    assert_eq!(unverified, UtdCause::SenderNotTrusted { requirement: TrustRequirement::VerifiedDevice });
    assert_eq!(classify(&MegolmError::DecryptionFailed("mac".into()), &facts()), UtdCause::Rejected);
    assert_eq!(classify(&MegolmError::Malformed("x".into()), &facts()), UtdCause::Rejected);
}

#[test]
fn every_cause_has_a_distinct_name() {
    let causes = [
        UtdCause::SentBeforeWeJoined,
        UtdCause::HistoricalMessage { backup: BackupAvailability::NotEnabled },
        UtdCause::Withheld { code: WithheldCode::NoOlm },
        UtdCause::NoSessionWithSender,
        UtdCause::KeyNotReceived { requested_from_own_devices: false, backup: BackupAvailability::NotEnabled },
        UtdCause::PartialKey { first_known_index: 1, message_index: 0 },
        UtdCause::SenderNotTrusted { requirement: TrustRequirement::Untrusted },
        UtdCause::Rejected,
        UtdCause::StoreFailure,
    ];
    let names: std::collections::BTreeSet<&str> = causes.iter().map(UtdCause::name).collect();
    assert_eq!(names.len(), causes.len());
}
