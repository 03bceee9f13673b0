//! The rotation rule as a table: one session state and one change per row,
//! and the reason (or none) the rule must give.

use std::time::Duration;

use ruma_common::{OwnedDeviceId, OwnedUserId, room_id, user_id};

use super::*;
use crate::{devices::LocalTrust, megolm::outbound::SharedWith, olm::Account};

const START: Timestamp = Timestamp::from_millis(1_000_000);

fn device(user: &OwnedUserId, id: &str) -> DeviceData {
    let account = Account::new(user.clone(), id.into(), START);
    let keys = account.signed_device_keys().unwrap();
    DeviceData::from_signed_keys(keys, user, Some(<&ruma_common::DeviceId>::from(id))).unwrap()
}

/// What a row changes from the base state: Bob's device BOB got the key
/// (acknowledged), Carol's device CAROL was sent it (not acknowledged).
#[derive(Clone, Copy, Debug)]
enum Change {
    Nothing,
    Discarded,
    MessagesAtLimit,
    MessagesBelowLimit,
    AgeAtLimit,
    AgeBelowLimit,
    OtherSettings,
    AcknowledgedMemberLeft,
    UnacknowledgedMemberLeft,
    DeviceDeleted,
    UnacknowledgedDeviceBlocked,
    DeviceNoLongerListed,
    TrustLost,
    NewDeviceJoined,
    DiscardedAndMemberLeft,
}

fn judge(change: Change) -> Option<RotationReason> {
    let (bob, carol) = (user_id!("@bob:e.org").to_owned(), user_id!("@carol:e.org").to_owned());
    let settings = EncryptionSettings::default();
    let mut session = OutboundGroupSession::new(room_id!("!r:e.org"), settings.clone(), START);
    let bob_device = device(&bob, "BOB");
    let carol_device = device(&carol, "CAROL");
    let shared = SharedWith { curve25519: bob_device.curve25519_key(), message_index: 0 };
    session.shared_with.entry(bob.clone()).or_default().insert("BOB".into(), shared);
    session.sent_to.entry(carol.clone()).or_default().insert("CAROL".into());
    let mut users: BTreeSet<OwnedUserId> = [bob.clone(), carol.clone()].into();
    let mut devices: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, DeviceData>> = BTreeMap::new();
    devices.entry(bob.clone()).or_default().insert("BOB".into(), bob_device);
    devices.entry(carol.clone()).or_default().insert("CAROL".into(), carol_device);
    let mut now = START;
    let mut asked = settings.clone();
    let mut untrusted: Option<OwnedDeviceId> = None;
    match change {
        Change::Nothing => {}
        Change::Discarded => session.invalidated = true,
        Change::MessagesAtLimit => session.message_count = settings.rotation_period_msgs,
        Change::MessagesBelowLimit => session.message_count = settings.rotation_period_msgs - 1,
        Change::AgeAtLimit => now = START.saturating_add(settings.rotation_period),
        Change::AgeBelowLimit => now = START.saturating_add(settings.rotation_period - Duration::from_millis(1)),
        Change::OtherSettings => asked.rotation_period_msgs += 1,
        Change::AcknowledgedMemberLeft => {
            users.remove(&bob);
        }
        Change::UnacknowledgedMemberLeft => {
            users.remove(&carol);
        }
        Change::DeviceDeleted => {
            devices.get_mut(&bob).unwrap().get_mut(<&ruma_common::DeviceId>::from("BOB")).unwrap().mark_deleted()
        }
        Change::UnacknowledgedDeviceBlocked => {
            let carol_device =
                devices.get_mut(&carol).unwrap().get_mut(<&ruma_common::DeviceId>::from("CAROL")).unwrap();
            carol_device.set_local_trust(LocalTrust::BlackListed);
        }
        Change::DeviceNoLongerListed => {
            devices.get_mut(&bob).unwrap().clear();
        }
        Change::TrustLost => untrusted = Some("BOB".into()),
        Change::NewDeviceJoined => {
            let new = device(&bob, "BOBNEW");
            devices.get_mut(&bob).unwrap().insert("BOBNEW".into(), new);
        }
        Change::DiscardedAndMemberLeft => {
            session.invalidated = true;
            users.remove(&bob);
        }
    }
    let allowed = |d: &DeviceData| untrusted.as_deref() != Some(d.device_id());
    rotation_reason(&session, &users, &devices, &asked, now, &allowed)
}

#[test]
fn each_change_gives_its_rotation_reason() {
    use RotationReason::*;
    let table = [
        (Change::Nothing, None),
        (Change::Discarded, Some(Discarded)),
        (Change::MessagesAtLimit, Some(MessageLimit)),
        (Change::MessagesBelowLimit, None),
        (Change::AgeAtLimit, Some(AgeLimit)),
        (Change::AgeBelowLimit, None),
        (Change::OtherSettings, Some(SettingsChanged)),
        (Change::AcknowledgedMemberLeft, Some(MemberLeft)),
        // A share sent but never acknowledged counts: the device may hold the key.
        (Change::UnacknowledgedMemberLeft, Some(MemberLeft)),
        (Change::DeviceDeleted, Some(DeviceRemovedOrBlocked)),
        (Change::UnacknowledgedDeviceBlocked, Some(DeviceRemovedOrBlocked)),
        // A device we sent the key to that the server no longer lists is gone.
        (Change::DeviceNoLongerListed, Some(DeviceRemovedOrBlocked)),
        (Change::TrustLost, Some(TrustLost)),
        // A new device of a member gets the key; nothing to rotate.
        (Change::NewDeviceJoined, None),
        // Expiry comes first.
        (Change::DiscardedAndMemberLeft, Some(Discarded)),
    ];
    for (change, expected) in table {
        assert_eq!(judge(change), expected, "{change:?}");
    }
}

#[test]
fn the_age_deadline_is_the_creation_plus_the_rooms_period() {
    let settings = EncryptionSettings::default();
    let session = OutboundGroupSession::new(room_id!("!r:e.org"), settings.clone(), START);
    assert_eq!(age_deadline(&session), START.saturating_add(settings.rotation_period));
    assert_eq!(expiry_reason(&session, age_deadline(&session)), Some(RotationReason::AgeLimit));
}
