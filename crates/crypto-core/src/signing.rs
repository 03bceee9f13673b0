//! Signing JSON objects and checking their signatures, as the spec's
//! appendix "Signing JSON" describes: the object without its `signatures`
//! and `unsigned` members, encoded as canonical JSON, signed with ed25519.

use ruma_common::UserId;
use serde_json::{Map, Value};
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

/// Why a signed JSON object was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The value to check or sign is not a JSON object.
    #[error("the signed value is not a JSON object")]
    NotAnObject,
    /// The object cannot be encoded as canonical JSON (e.g. a float or an out-of-range integer).
    #[error("the object is not canonical JSON: {0}")]
    NotCanonical(String),
    /// No signature from the expected signer and key id.
    #[error("no signature by {user_id} with key {key_id}")]
    MissingSignature {
        /// The user whose signature was expected.
        user_id: String,
        /// The key id, e.g. `ed25519:DEVICEID`.
        key_id: String,
    },
    /// The signature is not valid base64 of 64 bytes.
    #[error("the signature by {key_id} is not a valid encoding")]
    MalformedSignature {
        /// The key id of the malformed signature.
        key_id: String,
    },
    /// The signature does not verify with the given key.
    #[error("the signature by {key_id} does not verify")]
    InvalidSignature {
        /// The key id of the failing signature.
        key_id: String,
    },
}

/// The canonical JSON text of `object` with `signatures` and `unsigned` removed:
/// the bytes a signature covers. Written straight from the borrowed object:
/// `serde_json`'s map is ordered by key (code points) and its compact output
/// is canonical once numbers are checked to be integers in the safe range.
pub(crate) fn canonical_bytes_to_sign(object: &Map<String, Value>) -> Result<String, SignatureError> {
    let signed = WithoutSignatures(object);
    for (_, value) in signed.entries() {
        check_canonical(value)?;
    }
    serde_json::to_string(&signed).map_err(|e| SignatureError::NotCanonical(e.to_string()))
}

/// The canonical JSON text of a whole value (nothing removed): what the SAS
/// commitment hashes.
pub(crate) fn canonical_json(value: &Value) -> Result<String, SignatureError> {
    check_canonical(value)?;
    serde_json::to_string(value).map_err(|e| SignatureError::NotCanonical(e.to_string()))
}

/// The largest integer canonical JSON allows (2^53 - 1), and its negation the smallest.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Refuses what canonical JSON cannot carry: floats and integers outside ±(2^53 - 1).
fn check_canonical(value: &Value) -> Result<(), SignatureError> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => Ok(()),
            _ => Err(SignatureError::NotCanonical(format!("{n} is not an integer in the safe range"))),
        },
        Value::Array(items) => items.iter().try_for_each(check_canonical),
        Value::Object(map) => map.values().try_for_each(check_canonical),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// An object seen without its `signatures` and `unsigned` members.
struct WithoutSignatures<'a>(&'a Map<String, Value>);

impl WithoutSignatures<'_> {
    fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().filter(|(key, _)| key.as_str() != "signatures" && key.as_str() != "unsigned")
    }
}

impl serde::Serialize for WithoutSignatures<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries())
    }
}

/// Adds a signature by `user_id` / `key_id` to `value`, signing with `sign`.
pub(crate) fn sign_json(
    value: &mut Value,
    user_id: &UserId,
    key_id: &str,
    sign: impl FnOnce(&[u8]) -> Ed25519Signature,
) -> Result<(), SignatureError> {
    let object = value.as_object_mut().ok_or(SignatureError::NotAnObject)?;
    let signature = sign(canonical_bytes_to_sign(object)?.as_bytes());
    let signatures = object.entry("signatures").or_insert_with(|| Value::Object(Map::new()));
    let signatures = signatures.as_object_mut().ok_or(SignatureError::NotAnObject)?;
    let by_user = signatures
        .entry(user_id.as_str())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SignatureError::NotAnObject)?;
    by_user.insert(key_id.to_owned(), Value::String(signature.to_base64()));
    Ok(())
}

/// Checks that `value` carries a valid signature by `user_id` with `key_id`,
/// made by `key`.
pub(crate) fn verify_json(
    value: &Value,
    user_id: &UserId,
    key_id: &str,
    key: &Ed25519PublicKey,
) -> Result<(), SignatureError> {
    let object = value.as_object().ok_or(SignatureError::NotAnObject)?;
    let missing = || SignatureError::MissingSignature { user_id: user_id.to_string(), key_id: key_id.to_owned() };
    let encoded = object
        .get("signatures")
        .and_then(|s| s.get(user_id.as_str()))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(missing)?;
    let signature = Ed25519Signature::from_base64(encoded)
        .map_err(|_| SignatureError::MalformedSignature { key_id: key_id.to_owned() })?;
    let message = canonical_bytes_to_sign(object)?;
    key.verify(message.as_bytes(), &signature)
        .map_err(|_| SignatureError::InvalidSignature { key_id: key_id.to_owned() })
}

#[cfg(test)]
mod tests {
    use ruma_common::user_id;
    use serde_json::json;
    use vodozemac::Ed25519SecretKey;

    use super::*;

    /// The spec's appendix "Cryptographic test vectors" signs with this seed
    /// (unpadded base64 of a 32-byte ed25519 seed), key id `ed25519:1`.
    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

    /// The seed's last character carries non-zero padding bits, which strict
    /// decoders refuse; decode it leniently, as the spec's own tooling does.
    fn spec_key() -> Ed25519SecretKey {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut width = 0;
        let mut bytes = Vec::new();
        for c in SPEC_SEED.bytes() {
            bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            width += 6;
            if width >= 8 {
                width -= 8;
                bytes.push((bits >> width) as u8);
            }
        }
        Ed25519SecretKey::from_slice(&bytes[..32].try_into().unwrap())
    }

    /// Known answers from the spec's appendix, "Signing JSON" test vectors.
    #[test]
    fn spec_signing_vectors() {
        let key = spec_key();
        let domain = user_id!("@domain:domain");
        let cases = [
            (json!({}), "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"),
            (
                json!({"one": 1, "two": "Two"}),
                "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
            ),
        ];
        for (mut value, expected) in cases {
            sign_json(&mut value, domain, "ed25519:1", |m| key.sign(m)).unwrap();
            assert_eq!(value["signatures"][domain.as_str()]["ed25519:1"], json!(expected));
            verify_json(&value, domain, "ed25519:1", &key.public_key()).unwrap();
        }
    }

    #[test]
    fn canonical_form_strips_signatures_and_unsigned_and_sorts() {
        let value = json!({"b": 1, "a": "ü", "signatures": {"x": {}}, "unsigned": {"age": 3}});
        let text = canonical_bytes_to_sign(value.as_object().unwrap()).unwrap();
        assert_eq!(text, r#"{"a":"ü","b":1}"#);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(|i| json!(i)),
            "\\PC{0,8}|[\\x00-\\x1f\"\\\\]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Our borrowed canonical encoder writes exactly what ruma's canonical
        /// JSON type writes, for any object.
        #[test]
        fn canonical_bytes_match_ruma(
            members in proptest::collection::btree_map("\\PC{0,6}", json_value(), 0..6),
        ) {
            let object: Map<String, Value> = members.into_iter().collect();
            let mut stripped = object.clone();
            stripped.remove("signatures");
            stripped.remove("unsigned");
            let expected = ruma_common::canonical_json::CanonicalJsonValue::try_from(Value::Object(stripped))
                .unwrap()
                .to_string();
            proptest::prop_assert_eq!(canonical_bytes_to_sign(&object).unwrap(), expected);
        }
    }

    #[test]
    fn out_of_range_integers_are_not_canonical() {
        let value = json!({"a": [1, {"b": MAX_SAFE_INTEGER + 1}]});
        assert!(matches!(canonical_bytes_to_sign(value.as_object().unwrap()), Err(SignatureError::NotCanonical(_))));
    }

    #[test]
    fn floats_are_not_canonical() {
        let value = json!({"a": 1.5});
        assert!(matches!(canonical_bytes_to_sign(value.as_object().unwrap()), Err(SignatureError::NotCanonical(_))));
    }

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let key = Ed25519SecretKey::new();
        let user = user_id!("@alice:example.org");
        let mut value = json!({"one": 1, "two": "Two"});
        sign_json(&mut value, user, "ed25519:DEV", |m| key.sign(m)).unwrap();
        verify_json(&value, user, "ed25519:DEV", &key.public_key()).unwrap();

        let mut tampered = value.clone();
        tampered["one"] = json!(2);
        assert_eq!(
            verify_json(&tampered, user, "ed25519:DEV", &key.public_key()),
            Err(SignatureError::InvalidSignature { key_id: "ed25519:DEV".into() })
        );
        assert!(matches!(
            verify_json(&value, user, "ed25519:OTHER", &key.public_key()),
            Err(SignatureError::MissingSignature { .. })
        ));
        let mut garbled = value.clone();
        garbled["signatures"][user.as_str()]["ed25519:DEV"] = json!("not base64!");
        assert!(matches!(
            verify_json(&garbled, user, "ed25519:DEV", &key.public_key()),
            Err(SignatureError::MalformedSignature { .. })
        ));
    }

    fn json_leaf() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ]
    }

    fn json_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-z_]{1,8}", value, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest::proptest! {
        /// Any object signs and verifies; key order and `unsigned` do not matter;
        /// any change to a signed member breaks the signature.
        #[test]
        fn signatures_cover_exactly_the_signed_members(object in json_object(), extra in ".{0,8}") {
            let key = spec_key();
            let user = user_id!("@prop:example.org");
            let mut value = object;
            sign_json(&mut value, user, "ed25519:P", |m| key.sign(m)).unwrap();
            verify_json(&value, user, "ed25519:P", &key.public_key()).unwrap();

            let mut with_unsigned = value.clone();
            with_unsigned["unsigned"] = json!({"note": extra.clone()});
            verify_json(&with_unsigned, user, "ed25519:P", &key.public_key()).unwrap();

            let mut changed = value.clone();
            changed["added_member"] = json!(extra);
            proptest::prop_assert!(verify_json(&changed, user, "ed25519:P", &key.public_key()).is_err());
        }
    }
}
