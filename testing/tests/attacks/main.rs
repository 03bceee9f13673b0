//! The attacks suite: one test per defect found by hostile and cross-client
//! testing (issue 10). Each test's doc comment states the attack; its
//! assertions show the attack fails. Synapse versions of the restart and
//! redelivery attacks are in `client_synapse.rs`.

mod floods;
mod key_sharing;
mod limits_and_leaks;
mod malformed_keys;
mod published;
mod rejected_events;
mod room_key_takeover;
mod to_device;
mod withheld;

pub(crate) use hush_testing::Victim;

/// 33 bytes in 44 unpadded base64 characters: the length vodozemac 0.11
/// accepted before panicking.
pub(crate) fn key_of_33_bytes() -> String {
    let encoded = vodozemac::base64_encode([7u8; 33]);
    assert_eq!(encoded.len(), 44);
    encoded
}
