//! The SAS computations: the accepting side's commitment, the HKDF info
//! strings for the short strings and the MACs, and computing and checking
//! MACs in both the `.v2` and the legacy encoding.

use ruma_common::{DeviceId, UserId};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vodozemac::{Curve25519PublicKey, sas::EstablishedSas};

use super::methods::MacMethod;
use crate::signing::canonical_json;

/// One end of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Party {
    /// The user.
    pub user_id: ruma_common::OwnedUserId,
    /// The device.
    pub device_id: ruma_common::OwnedDeviceId,
}

impl Party {
    fn user(&self) -> &UserId {
        &self.user_id
    }

    fn device(&self) -> &DeviceId {
        &self.device_id
    }
}

/// The commitment the accepting side sends: unpadded base64 of SHA-256
/// over its public key (base64) followed by the canonical JSON of the
/// `start` content. `None` if the content is not canonical JSON.
pub(crate) fn commitment(accepter_key: &Curve25519PublicKey, start: &Value) -> Option<String> {
    let canonical = canonical_json(start).ok()?;
    let mut hash = Sha256::new();
    hash.update(accepter_key.to_base64().as_bytes());
    hash.update(canonical.as_bytes());
    Some(vodozemac::base64_encode(hash.finalize()))
}

/// Whether `given` equals the commitment, compared in constant time.
pub(crate) fn commitment_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The HKDF info for the short strings: the starting side first.
pub(crate) fn sas_info(
    starter: &Party,
    starter_key: &Curve25519PublicKey,
    accepter: &Party,
    accepter_key: &Curve25519PublicKey,
    flow_id: &str,
) -> String {
    format!(
        "MATRIX_KEY_VERIFICATION_SAS|{}|{}|{}|{}|{}|{}|{flow_id}",
        starter.user(),
        starter.device(),
        starter_key.to_base64(),
        accepter.user(),
        accepter.device(),
        accepter_key.to_base64(),
    )
}

/// The HKDF info prefix for MACs that `sender` sends to `receiver` (no
/// separators); a key id or `KEY_IDS` follows.
pub(crate) fn mac_info(sender: &Party, receiver: &Party, flow_id: &str) -> String {
    format!(
        "MATRIX_KEY_VERIFICATION_MAC{}{}{}{}{flow_id}",
        sender.user(),
        sender.device(),
        receiver.user(),
        receiver.device()
    )
}

/// The MAC of `input` under `info`, encoded as the method wants.
pub(crate) fn mac(sas: &EstablishedSas, method: MacMethod, input: &str, info: &str) -> String {
    match method {
        MacMethod::V2 => sas.calculate_mac(input, info).to_base64(),
        MacMethod::Legacy => sas.calculate_mac_invalid_base64(input, info),
    }
}

/// Whether `given` is the MAC of `input` under `info` (constant time).
pub(crate) fn mac_matches(sas: &EstablishedSas, method: MacMethod, input: &str, info: &str, given: &str) -> bool {
    match method {
        MacMethod::V2 => {
            vodozemac::sas::Mac::from_base64(given).is_ok_and(|tag| sas.verify_mac(input, info, &tag).is_ok())
        }
        MacMethod::Legacy => {
            let expected = sas.calculate_mac_invalid_base64(input, info);
            expected.as_bytes().ct_eq(given.as_bytes()).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commitment test vector matrix-sdk-crypto uses (`helpers.rs`),
    /// recomputed independently: public key, start content, commitment.
    #[test]
    fn the_commitment_matches_the_public_vector() {
        let key = crate::keys::curve25519_from_base64("Q/NmNFEUS1fS+YeEmiZkjjblKTitrKOAk7cPEumcMlg").unwrap();
        let start = serde_json::json!({
            "from_device": "XOWLHHFSWM",
            "hashes": ["sha256"],
            "key_agreement_protocols": ["curve25519-hkdf-sha256", "curve25519"],
            "message_authentication_codes": ["hkdf-hmac-sha256", "hmac-sha256"],
            "method": "m.sas.v1",
            "short_authentication_string": ["decimal", "emoji"],
            "transaction_id": "bYxBsirjUJO9osar6ST4i2M2NjrYLA7l",
        });
        assert_eq!(commitment(&key, &start).unwrap(), "CCQmB4JCdB0FW21FdAnHj/Hu8+W9+Nb0vgwPEnZZQ4g");
    }
}
