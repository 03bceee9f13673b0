//! What `m.sas.v1` offers and how the accepting side picks: key agreement
//! `curve25519-hkdf-sha256`, hash `sha256`, MAC `hkdf-hmac-sha256.v2` (and
//! the legacy `hkdf-hmac-sha256` for older clients, never when both sides
//! have `.v2`), short strings `decimal` and `emoji`.

use serde_json::{Value, json};

use crate::verification::{CancelCode, Cancellation};

/// The key agreement protocol we support.
pub(crate) const KEY_AGREEMENT: &str = "curve25519-hkdf-sha256";
/// The hash we support.
pub(crate) const HASH: &str = "sha256";
/// The MAC method every current client supports.
pub(crate) const MAC_V2: &str = "hkdf-hmac-sha256.v2";
/// libolm's MAC method with its broken base64 (for older clients).
pub(crate) const MAC_LEGACY: &str = "hkdf-hmac-sha256";

/// A MAC method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacMethod {
    /// `hkdf-hmac-sha256.v2`.
    V2,
    /// `hkdf-hmac-sha256`.
    Legacy,
}

impl MacMethod {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => MAC_V2,
            Self::Legacy => MAC_LEGACY,
        }
    }
}

/// A short authentication string method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasMethod {
    /// Three four-digit numbers.
    Decimal,
    /// Seven emoji.
    Emoji,
}

/// What both sides will use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The MAC method.
    pub mac: MacMethod,
    /// The short strings both support (decimal is mandatory).
    pub short_strings: Vec<SasMethod>,
}

/// The `m.sas.v1` part of our `start`.
pub(crate) fn start_offer() -> Value {
    json!({
        "method": "m.sas.v1",
        "key_agreement_protocols": [KEY_AGREEMENT],
        "hashes": [HASH],
        "message_authentication_codes": [MAC_V2, MAC_LEGACY],
        "short_authentication_string": ["decimal", "emoji"],
    })
}

fn strings<'a>(content: &'a Value, field: &str) -> Result<Vec<&'a str>, Cancellation> {
    let invalid = || Cancellation::ours(CancelCode::InvalidMessage);
    let list = content.get(field).and_then(Value::as_array).ok_or_else(invalid)?;
    // Bounded: a hostile list of a million entries is refused unread.
    if list.len() > 64 {
        return Err(invalid());
    }
    list.iter().map(|v| v.as_str().ok_or_else(invalid)).collect()
}

/// The accepting side's choice from a `start`'s offer.
pub(crate) fn choose(start: &Value) -> Result<Agreed, Cancellation> {
    let unknown = || Cancellation::ours(CancelCode::UnknownMethod);
    if !strings(start, "key_agreement_protocols")?.contains(&KEY_AGREEMENT)
        || !strings(start, "hashes")?.contains(&HASH)
    {
        return Err(unknown());
    }
    let macs = strings(start, "message_authentication_codes")?;
    let mac = if macs.contains(&MAC_V2) {
        MacMethod::V2
    } else if macs.contains(&MAC_LEGACY) {
        MacMethod::Legacy
    } else {
        return Err(unknown());
    };
    let offered = strings(start, "short_authentication_string")?;
    let short_strings = short_strings_of(&offered)?;
    Ok(Agreed { mac, short_strings })
}

fn short_strings_of(names: &[&str]) -> Result<Vec<SasMethod>, Cancellation> {
    if !names.contains(&"decimal") {
        return Err(Cancellation::ours(CancelCode::UnknownMethod));
    }
    let mut methods = vec![SasMethod::Decimal];
    if names.contains(&"emoji") {
        methods.push(SasMethod::Emoji);
    }
    Ok(methods)
}

/// The starting side's check of an `accept`: every choice must be one we offered.
pub(crate) fn check_accept(accept: &Value) -> Result<Agreed, Cancellation> {
    let field = |name: &str| accept.get(name).and_then(Value::as_str);
    let unknown = || Cancellation::ours(CancelCode::UnknownMethod);
    if field("key_agreement_protocol") != Some(KEY_AGREEMENT) || field("hash") != Some(HASH) {
        return Err(unknown());
    }
    let mac = match field("message_authentication_code") {
        Some(MAC_V2) => MacMethod::V2,
        Some(MAC_LEGACY) => MacMethod::Legacy,
        _ => return Err(unknown()),
    };
    let short_strings = short_strings_of(&strings(accept, "short_authentication_string")?)?;
    Ok(Agreed { mac, short_strings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_is_chosen_whenever_both_sides_have_it() {
        assert_eq!(choose(&start_offer()).unwrap().mac, MacMethod::V2);
        let mut legacy_only = start_offer();
        legacy_only["message_authentication_codes"] = json!([MAC_LEGACY, "hmac-sha256"]);
        assert_eq!(choose(&legacy_only).unwrap().mac, MacMethod::Legacy);
    }

    #[test]
    fn offers_without_a_common_method_are_unknown_method() {
        for (field, value) in [
            ("key_agreement_protocols", json!(["curve25519"])),
            ("hashes", json!(["sha512"])),
            ("message_authentication_codes", json!(["hmac-sha256"])),
            ("short_authentication_string", json!(["emoji"])),
        ] {
            let mut offer = start_offer();
            offer[field] = value;
            assert_eq!(choose(&offer).unwrap_err().code, CancelCode::UnknownMethod, "{field}");
        }
        let mut malformed = start_offer();
        malformed["hashes"] = json!("sha256");
        assert_eq!(choose(&malformed).unwrap_err().code, CancelCode::InvalidMessage);
    }
}
