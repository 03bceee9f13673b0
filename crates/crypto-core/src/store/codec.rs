//! The one encoding of stored values, shared by every backend: MessagePack
//! with field names (compact and quick for the byte arrays of pickles), and
//! one decoder with a bounded nesting depth.
//!
//! A store file is input like any other (a plain store can be written by
//! anyone with access to the disk), so decoding must not recurse without
//! bound: MessagePack nested a few thousand levels deep would exhaust the
//! decoding thread's stack. No value hush writes nests deeper than
//! [`MAX_VALUE_DEPTH`]: the deepest are the signed JSON of device and
//! cross-signing keys, whose depth is bounded where they are received
//! ([`MAX_JSON_DEPTH`]). The decoding limit is higher than that bound
//! needs: stores written before it was enforced may hold key JSON as deep
//! as serde_json accepted (128 levels), and must stay readable.

use serde::{Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

/// The deepest JSON accepted in keys kept verbatim (device keys,
/// cross-signing keys): real ones nest four or five levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// The deepest nesting of maps and arrays a stored value may have: JSON as
/// deep as serde_json parses (128 levels, the bound before
/// [`MAX_JSON_DEPTH`] was enforced) inside the records that carry it, with
/// room to spare. Far below what exhausts a thread's stack.
pub const MAX_VALUE_DEPTH: usize = 160;

/// Encodes a value for storage.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value).map(Zeroizing::new)
}

/// Decodes a stored value, refusing one that nests deeper than
/// [`MAX_VALUE_DEPTH`] (an error, never a stack overflow).
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp-serde counts the value itself as one level.
    deserializer.set_max_depth(MAX_VALUE_DEPTH + 1);
    T::deserialize(&mut deserializer)
}

/// The nesting depth of a JSON value: 0 for a scalar, one more for each
/// level of objects and arrays. Iterative, so any depth serde_json accepted
/// is measured without recursion.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0usize)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// MessagePack for `depth` arrays nested in one another around a nil.
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0xc0);
        bytes
    }

    fn nested_json(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn a_value_at_the_depth_limit_decodes() {
        let value: Value = decode_value(&nested_arrays(MAX_VALUE_DEPTH)).expect("within the limit");
        assert_eq!(json_depth(&value), MAX_VALUE_DEPTH);
    }

    #[test]
    fn a_value_one_level_deeper_than_the_limit_is_an_error() {
        assert!(decode_value::<Value>(&nested_arrays(MAX_VALUE_DEPTH + 1)).is_err());
    }

    /// The store-file attack: a value nested 100,000 levels deep, decoded on
    /// a thread with a 1 MiB stack, is refused instead of
    /// overflowing it.
    #[test]
    fn a_hostile_deeply_nested_value_is_refused_on_a_small_stack() {
        let outcome = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| decode_value::<Value>(&nested_arrays(100_000)).is_err())
            .expect("spawn")
            .join()
            .expect("the decoder did not overflow the stack");
        assert!(outcome);
    }

    #[test]
    fn json_depth_counts_levels_of_objects_and_arrays() {
        assert_eq!(json_depth(&json!("scalar")), 0);
        assert_eq!(json_depth(&json!({"a": [1, {"b": {}}], "c": 2})), 4);
        assert_eq!(json_depth(&nested_json(1_000)), 1_000);
    }

    /// Device keys as received, with `depth` levels of nesting in total
    /// (the object itself and `unsigned` nested below it).
    fn keys_nested(depth: usize) -> Value {
        json!({"user_id": "@a:example.org", "device_id": "D", "unsigned": nested_json(depth - 1)})
    }

    #[test]
    fn device_keys_deeper_than_the_json_limit_are_refused_for_their_depth() {
        let user = ruma_common::user_id!("@a:example.org");
        let refused = crate::devices::DeviceData::from_signed_keys(keys_nested(MAX_JSON_DEPTH + 1), user, None);
        assert!(matches!(refused, Err(crate::devices::DeviceKeysError::Malformed(ref m)) if m.contains("nested")));
        // At the limit they are judged on their content (here: no keys).
        let judged = crate::devices::DeviceData::from_signed_keys(keys_nested(MAX_JSON_DEPTH), user, None);
        assert!(matches!(judged, Err(crate::devices::DeviceKeysError::Malformed(ref m)) if !m.contains("nested")));
    }

    #[test]
    fn cross_signing_keys_deeper_than_the_json_limit_are_refused_for_their_depth() {
        use crate::identities::{CrossSigningPublicKey, IdentityError, KeyRole};
        let user = ruma_common::user_id!("@a:example.org");
        let refused = CrossSigningPublicKey::parse(keys_nested(MAX_JSON_DEPTH + 1), user, KeyRole::Master);
        assert!(matches!(refused, Err(IdentityError::Malformed { ref reason, .. }) if reason.contains("nested")));
        let judged = CrossSigningPublicKey::parse(keys_nested(MAX_JSON_DEPTH), user, KeyRole::Master);
        assert!(!matches!(judged, Err(IdentityError::Malformed { ref reason, .. }) if reason.contains("nested")));
    }

    #[test]
    fn a_round_trip_keeps_the_value() {
        let value = json!({"keys": {"ed25519:A": "x"}, "n": [1, 2, 3]});
        let bytes = encode_value(&value).expect("encode");
        assert_eq!(decode_value::<Value>(&bytes).expect("decode"), value);
    }
}
