//! [`Account`]: this device's Olm account, its signed device keys, and the
//! one-time and fallback keys it keeps on the server.
//!
//! Keys are generated and persisted before they are offered for upload, so an
//! upload that was never acknowledged is repeated with the very same keys after
//! a restart (never fresh keys under reused ids).

use std::collections::BTreeMap;

use ruma_client_api::keys::upload_keys;
use ruma_common::{
    DeviceId, OneTimeKeyAlgorithm, OneTimeKeyId, OwnedDeviceId, OwnedOneTimeKeyId, OwnedOneTimeKeyName, OwnedUserId,
    encryption::OneTimeKey, serde::Raw,
};
use serde_json::{Value, json};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey, KeyId,
    olm::{Account as OlmAccount, InboundCreationResult, PreKeyMessage, Session, SessionConfig, SessionCreationError},
};

use crate::{
    Timestamp,
    signing::{SignatureError, sign_json},
    store::StoredAccount,
};

/// Algorithms our device keys advertise.
pub(crate) const SUPPORTED_ALGORITHMS: [&str; 2] = ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"];

/// This device's Olm account.
pub(crate) struct Account {
    inner: OlmAccount,
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    device_keys_uploaded: bool,
    uploaded_one_time_key_count: u64,
    created_at: Timestamp,
    /// A sync's count of zero is not believed (see
    /// [`mark_keys_as_published`](Self::mark_keys_as_published)); in
    /// memory only, so a restart trusts the server again, once.
    sync_zero_distrusted: bool,
}

impl Account {
    /// A fresh account with a first batch of one-time keys and a fallback key.
    pub(crate) fn new(user_id: OwnedUserId, device_id: OwnedDeviceId, now: Timestamp) -> Self {
        let mut account = Self {
            inner: OlmAccount::new(),
            user_id,
            device_id,
            device_keys_uploaded: false,
            uploaded_one_time_key_count: 0,
            created_at: now,
            sync_zero_distrusted: false,
        };
        account.generate_one_time_keys_if_needed();
        account.inner.generate_fallback_key();
        account
    }

    pub(crate) fn from_stored(stored: StoredAccount) -> Self {
        let StoredAccount { user_id, device_id, pickle, device_keys_uploaded, uploaded_one_time_key_count, created_at } =
            stored;
        Self {
            inner: OlmAccount::from_pickle(pickle),
            user_id,
            device_id,
            device_keys_uploaded,
            uploaded_one_time_key_count,
            created_at,
            sync_zero_distrusted: false,
        }
    }

    pub(crate) fn to_stored(&self) -> StoredAccount {
        StoredAccount {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            pickle: self.inner.pickle(),
            device_keys_uploaded: self.device_keys_uploaded,
            uploaded_one_time_key_count: self.uploaded_one_time_key_count,
            created_at: self.created_at,
        }
    }

    /// When this account was created (this device's first open).
    pub(crate) fn created_at(&self) -> Timestamp {
        self.created_at
    }

    pub(crate) fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    pub(crate) fn ed25519_key(&self) -> Ed25519PublicKey {
        self.inner.ed25519_key()
    }

    pub(crate) fn curve25519_key(&self) -> Curve25519PublicKey {
        self.inner.curve25519_key()
    }

    /// How many one-time keys the server should hold: half of what the
    /// account can remember, so pre-key messages in flight still find theirs.
    fn one_time_key_target(&self) -> u64 {
        (self.inner.max_number_of_one_time_keys() / 2) as u64
    }

    /// Our device keys, signed with our ed25519 key.
    pub(crate) fn signed_device_keys(&self) -> Result<Value, SignatureError> {
        let device_id = &self.device_id;
        let mut keys = json!({
            "user_id": self.user_id,
            "device_id": device_id,
            "algorithms": SUPPORTED_ALGORITHMS,
            "keys": {
                format!("curve25519:{device_id}"): self.curve25519_key().to_base64(),
                format!("ed25519:{device_id}"): self.ed25519_key().to_base64(),
            },
        });
        self.sign(&mut keys)?;
        Ok(keys)
    }

    /// Whether the server has our device keys.
    pub(crate) fn device_keys_published(&self) -> bool {
        self.device_keys_uploaded
    }

    /// Signs `message` with our device's ed25519 key.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> vodozemac::Ed25519Signature {
        self.inner.sign(message)
    }

    fn sign(&self, value: &mut Value) -> Result<(), SignatureError> {
        sign_json(value, &self.user_id, &format!("ed25519:{}", self.device_id), |m| self.inner.sign(m))
    }

    fn signed_key(&self, key: Curve25519PublicKey, fallback: bool) -> Result<Raw<OneTimeKey>, SignatureError> {
        let mut value = json!({ "key": key.to_base64() });
        if fallback {
            value["fallback"] = Value::Bool(true);
        }
        self.sign(&mut value)?;
        Raw::new(&value).map(Raw::cast_unchecked).map_err(|e| SignatureError::NotCanonical(e.to_string()))
    }

    fn signed_keys(
        &self,
        keys: impl IntoIterator<Item = (KeyId, Curve25519PublicKey)>,
        fallback: bool,
    ) -> Result<BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>, SignatureError> {
        keys.into_iter()
            .map(|(id, key)| {
                let name = OwnedOneTimeKeyName::from(id.to_base64());
                let key_id = OneTimeKeyId::from_parts(OneTimeKeyAlgorithm::SignedCurve25519, &name);
                Ok((key_id, self.signed_key(key, fallback)?))
            })
            .collect()
    }

    /// The upload the server still lacks, or `None` if it has everything.
    /// Built only from persisted state, so it is identical after a restart.
    pub(crate) fn keys_for_upload(&self) -> Result<Option<upload_keys::v3::Request>, SignatureError> {
        let mut request = upload_keys::v3::Request::new();
        if !self.device_keys_uploaded {
            let keys = self.signed_device_keys()?;
            request.device_keys = Some(
                Raw::new(&keys).map(Raw::cast_unchecked).map_err(|e| SignatureError::NotCanonical(e.to_string()))?,
            );
        }
        request.one_time_keys = self.signed_keys(self.inner.one_time_keys(), false)?;
        request.fallback_keys = self.signed_keys(self.inner.fallback_key(), true)?;
        let empty =
            request.device_keys.is_none() && request.one_time_keys.is_empty() && request.fallback_keys.is_empty();
        Ok((!empty).then_some(request))
    }

    /// The server acknowledged an upload: everything in it is published.
    /// Its answer's counts are the server's own (an algorithm it does not
    /// list has none, as the spec says), returned as the count of
    /// `signed_curve25519` keys. An answer holding twice the target or more
    /// proves that a sync's count of zero made us upload keys the server
    /// did not lack: from then on a sync's zero is not believed, until a
    /// sync reports a count again (a server that drops the count while it
    /// holds keys would otherwise get a batch of keys at every sync).
    pub(crate) fn mark_keys_as_published(
        &mut self,
        one_time_key_counts: &BTreeMap<OneTimeKeyAlgorithm, js_int::UInt>,
    ) -> u64 {
        self.device_keys_uploaded = true;
        self.inner.mark_keys_as_published();
        let count = one_time_key_counts.get(&OneTimeKeyAlgorithm::SignedCurve25519).map_or(0, |c| u64::from(*c));
        self.uploaded_one_time_key_count = count;
        if count >= self.one_time_key_target().saturating_mul(2) {
            self.sync_zero_distrusted = true;
        }
        count
    }

    fn has_unpublished_one_time_keys(&self) -> bool {
        !self.inner.one_time_keys().is_empty()
    }

    /// Generates one-time keys if the server holds fewer than the target
    /// (as last counted); whether it did.
    pub(crate) fn generate_one_time_keys_if_needed(&mut self) -> bool {
        if self.has_unpublished_one_time_keys() {
            return false;
        }
        let target = self.one_time_key_target();
        let missing = target.saturating_sub(self.uploaded_one_time_key_count);
        if missing == 0 {
            return false;
        }
        self.inner.generate_one_time_keys(usize::try_from(missing).unwrap_or(usize::MAX));
        true
    }

    /// Applies the key counts from a sync. Returns whether the account changed
    /// (new keys to upload), so the caller persists it.
    pub(crate) fn update_key_counts(
        &mut self,
        one_time_key_count: Option<u64>,
        unused_fallback_keys: Option<&[OneTimeKeyAlgorithm]>,
    ) -> bool {
        let mut changed = false;
        let one_time_key_count = match one_time_key_count {
            Some(0) if self.sync_zero_distrusted => None,
            Some(count) => {
                self.sync_zero_distrusted &= count == 0;
                Some(count)
            }
            None => None,
        };
        if let Some(count) = one_time_key_count
            && self.device_keys_uploaded
        {
            if count != self.uploaded_one_time_key_count {
                self.uploaded_one_time_key_count = count;
                changed = true;
            }
            changed |= self.generate_one_time_keys_if_needed();
        }
        if let Some(unused) = unused_fallback_keys
            && self.device_keys_uploaded
            && !unused.contains(&OneTimeKeyAlgorithm::SignedCurve25519)
            && self.inner.fallback_key().is_empty()
        {
            // The server handed our fallback key out: rotate it. The previous
            // one stays usable until the next rotation, for messages in flight.
            self.inner.forget_fallback_key();
            self.inner.generate_fallback_key();
            changed = true;
        }
        changed
    }

    /// Creates an inbound session from a pre-key message, removing the
    /// one-time key it used.
    pub(crate) fn create_inbound_session(
        &mut self,
        their_identity_key: Curve25519PublicKey,
        message: &PreKeyMessage,
    ) -> Result<InboundCreationResult, SessionCreationError> {
        self.inner.create_inbound_session(SessionConfig::version_1(), their_identity_key, message)
    }

    /// Creates an outbound session from another device's identity and one-time key.
    pub(crate) fn create_outbound_session(
        &self,
        identity_key: Curve25519PublicKey,
        one_time_key: Curve25519PublicKey,
    ) -> Result<Session, SessionCreationError> {
        self.inner.create_outbound_session(SessionConfig::version_1(), identity_key, one_time_key)
    }

    /// A copy of the account, made through its pickle (vodozemac accounts are
    /// not `Clone`); used to undo changes an input turned out not to justify.
    pub(crate) fn snapshot(&self) -> Self {
        Self { sync_zero_distrusted: self.sync_zero_distrusted, ..Self::from_stored(self.to_stored()) }
    }

    /// Forgets the one-time key `public_key` (used by a session created on a
    /// copy of this account). `false` if it is not one of our one-time keys
    /// (a fallback key, or a key already used).
    pub(crate) fn remove_one_time_key(&mut self, public_key: Curve25519PublicKey) -> bool {
        self.inner.remove_one_time_key(public_key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use js_int::uint;
    use ruma_common::{owned_device_id, owned_user_id};

    use super::*;
    use crate::signing::verify_json;

    fn account() -> Account {
        Account::new(owned_user_id!("@alice:example.org"), owned_device_id!("ALICEDEV"), Timestamp::EPOCH)
    }

    #[test]
    fn first_upload_has_signed_device_keys_otks_and_fallback() {
        let account = account();
        let request = account.keys_for_upload().unwrap().unwrap();
        let keys: Value = request.device_keys.unwrap().deserialize_as_unchecked().unwrap();
        verify_json(&keys, &account.user_id, "ed25519:ALICEDEV", &account.ed25519_key()).unwrap();
        assert_eq!(request.one_time_keys.len(), 25);
        assert_eq!(request.fallback_keys.len(), 1);
        for (id, key) in &request.one_time_keys {
            assert!(id.as_str().starts_with("signed_curve25519:"));
            let key: Value = key.deserialize_as_unchecked().unwrap();
            verify_json(&key, &account.user_id, "ed25519:ALICEDEV", &account.ed25519_key()).unwrap();
        }
    }

    #[test]
    fn upload_is_identical_after_a_pickle_round_trip() {
        let account = account();
        let before = serde_json::to_string(&account.keys_for_upload().unwrap().unwrap().one_time_keys).unwrap();
        let reopened = Account::from_stored(account.to_stored());
        let after = serde_json::to_string(&reopened.keys_for_upload().unwrap().unwrap().one_time_keys).unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn published_keys_are_topped_up_from_sync_counts() {
        let mut account = account();
        account.mark_keys_as_published(&BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, uint!(25))]));
        assert!(account.keys_for_upload().unwrap().is_none());
        assert!(!account.update_key_counts(Some(25), Some(&[OneTimeKeyAlgorithm::SignedCurve25519])));
        assert!(account.update_key_counts(Some(20), None));
        assert_eq!(account.keys_for_upload().unwrap().unwrap().one_time_keys.len(), 5);
        // While keys are unpublished, a further drop does not generate more.
        assert!(account.update_key_counts(Some(19), None));
        assert_eq!(account.keys_for_upload().unwrap().unwrap().one_time_keys.len(), 5);
    }

    /// A server that leaves the count out of every sync while it holds keys
    /// (against the spec, which allows that only at zero) would get a batch
    /// of keys at every sync, as a sync's absent count reads as zero. The
    /// upload's answer is the server's own count: once it shows twice the
    /// target, a sync's zero is not believed until a sync gives a count.
    #[test]
    fn a_server_hoarding_keys_while_reporting_zero_gets_no_more_batches() {
        let mut account = account();
        let target = account.one_time_key_target();
        account.mark_keys_as_published(&BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, uint!(25))]));
        // The server's sync says zero (it left the count out): a top-up.
        assert!(account.update_key_counts(Some(0), None));
        let batch = account.keys_for_upload().unwrap().unwrap().one_time_keys.len() as u64;
        assert_eq!(batch, target);
        let held = js_int::UInt::try_from(25 + batch).unwrap();
        account.mark_keys_as_published(&BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, held)]));
        assert!(25 + batch >= 2 * target, "the server holds twice the target");
        for _ in 0..10 {
            account.update_key_counts(Some(0), None);
            assert!(account.keys_for_upload().unwrap().is_none(), "a zero after the hoard is not believed");
        }
        // A real count clears the doubt; a later zero is believed again.
        account.update_key_counts(Some(40), None);
        assert!(account.update_key_counts(Some(0), None));
        assert!(account.keys_for_upload().unwrap().is_some());
    }

    #[test]
    fn an_upload_answer_without_our_algorithm_counts_zero() {
        let mut account = account();
        assert_eq!(account.mark_keys_as_published(&BTreeMap::new()), 0);
        assert!(account.generate_one_time_keys_if_needed(), "none left: a new batch");
    }

    #[test]
    fn used_fallback_key_is_rotated_once() {
        let mut account = account();
        account.mark_keys_as_published(&BTreeMap::new());
        assert!(account.update_key_counts(None, Some(&[])));
        let request = account.keys_for_upload().unwrap().unwrap();
        assert_eq!(request.fallback_keys.len(), 1);
        // Until the new one is published, no second rotation.
        assert!(!account.update_key_counts(None, Some(&[])));
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// The server hands out `n` one-time keys (or the fallback key if none are left).
        Claim(u8),
        /// A sync reports the server's counts.
        Sync,
        /// The pending upload is sent and acknowledged.
        Upload,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![(0u8..30).prop_map(Step::Claim), Just(Step::Sync), Just(Step::Upload)]
    }

    /// The server side of the key-count state machine.
    #[derive(Default)]
    struct SimulatedServer {
        count: u64,
        fallback_unused: bool,
    }

    impl SimulatedServer {
        /// Hands out `n` one-time keys, or the fallback key once none are left.
        fn claim(&mut self, n: u8) {
            for _ in 0..n {
                if self.count > 0 {
                    self.count -= 1;
                } else {
                    self.fallback_unused = false;
                }
            }
        }

        /// Reports the counts to the account, as a sync does.
        fn sync(&self, account: &mut Account) {
            let unused: &[OneTimeKeyAlgorithm] =
                if self.fallback_unused { &[OneTimeKeyAlgorithm::SignedCurve25519] } else { &[] };
            account.update_key_counts(Some(self.count), Some(unused));
        }

        /// Takes the account's pending upload and acknowledges it.
        fn upload(&mut self, account: &mut Account) {
            if let Some(request) = account.keys_for_upload().unwrap() {
                self.count += request.one_time_keys.len() as u64;
                self.fallback_unused |= !request.fallback_keys.is_empty();
                let counts = BTreeMap::from([(
                    OneTimeKeyAlgorithm::SignedCurve25519,
                    js_int::UInt::try_from(self.count).unwrap(),
                )]);
                account.mark_keys_as_published(&counts);
            }
        }
    }

    proptest::proptest! {
        /// Against a simulated server, the account never offers more keys
        /// than the target, never leaves the server empty after a sync and an
        /// upload, and keeps at most one unpublished fallback key.
        #[test]
        fn key_replenishment_holds_its_invariants(steps in proptest::collection::vec(step(), 1..60)) {
            let mut account = account();
            let target = 25u64;
            let mut server = SimulatedServer::default();
            for step in steps {
                match step {
                    Step::Claim(n) => server.claim(n),
                    Step::Sync => server.sync(&mut account),
                    Step::Upload => server.upload(&mut account),
                }
                let unpublished = account.inner.one_time_keys().len() as u64;
                proptest::prop_assert!(server.count + unpublished <= target, "{} + {unpublished}", server.count);
                proptest::prop_assert!(account.inner.fallback_key().len() <= 1);
            }
            // Settle: upload, sync, upload, sync: the server is full and has a fallback key.
            for _ in 0..2 {
                server.upload(&mut account);
                server.sync(&mut account);
            }
            proptest::prop_assert_eq!(server.count, target);
            proptest::prop_assert!(server.fallback_unused);
        }
    }
}
