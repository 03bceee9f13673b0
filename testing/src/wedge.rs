//! [`wedged_message`]: a well-formed Olm normal message that names a
//! sender's key but that no session of the recipient can decrypt, the way
//! a message looks when the two devices' sessions went out of step.

use ruma_common::UserId;
use serde_json::{Value, json};
use vodozemac::{
    Curve25519PublicKey,
    olm::{Account, OlmMessage, SessionConfig},
};

/// An `m.room.encrypted` to-device event from `sender` claiming
/// `sender_key`, for `recipient_key`, carrying a normal (not pre-key) Olm
/// message of a session between two throwaway accounts.
pub fn wedged_message(sender: &UserId, sender_key: Curve25519PublicKey, recipient_key: Curve25519PublicKey) -> Value {
    let x = Account::new();
    let mut y = Account::new();
    y.generate_one_time_keys(1);
    let one_time_key = *y.one_time_keys().values().next().expect("a one-time key");
    let mut xs =
        x.create_outbound_session(SessionConfig::version_1(), y.curve25519_key(), one_time_key).expect("session");
    let OlmMessage::PreKey(pre) = xs.encrypt("hi").expect("encrypt") else {
        unreachable!("a first message is pre-key")
    };
    let mut ys =
        y.create_inbound_session(SessionConfig::version_1(), x.curve25519_key(), &pre).expect("inbound").session;
    xs.decrypt(&ys.encrypt("back").expect("encrypt")).expect("decrypt");
    let OlmMessage::Normal(normal) = xs.encrypt("x").expect("encrypt") else { unreachable!("after a reply, normal") };
    json!({
        "sender": sender,
        "type": "m.room.encrypted",
        "content": {
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": sender_key.to_base64(),
            "ciphertext": { recipient_key.to_base64(): { "type": 1, "body": normal.to_base64() } },
        },
    })
}
