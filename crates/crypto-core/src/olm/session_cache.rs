//! The Olm sessions loaded from the store, by the other device's curve25519 key.

use std::collections::{HashMap, hash_map::Entry};

use vodozemac::Curve25519PublicKey;

use crate::{
    olm::Session,
    store::{CryptoStore, StoreError},
};

/// Olm sessions in memory. Loaded per sender key on first use; the store
/// stays the source of truth (the cache is dropped if a save fails).
#[derive(Default)]
pub(crate) struct SessionCache {
    by_key: HashMap<Curve25519PublicKey, Vec<Session>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").field("sender_keys", &self.by_key.len()).finish()
    }
}

impl SessionCache {
    /// The sessions with `key`, loading them from `store` if needed.
    pub(crate) async fn get_or_load(
        &mut self,
        store: &dyn CryptoStore,
        key: Curve25519PublicKey,
    ) -> Result<&mut Vec<Session>, StoreError> {
        match self.by_key.entry(key) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let stored = store.get_sessions(&key).await?;
                Ok(entry.insert(stored.into_iter().map(Session::from_stored).collect()))
            }
        }
    }

    /// Takes the sessions with `key` out (loading them if needed), to work on
    /// them without the cache; hand them back with [`put_back`](Self::put_back).
    pub(crate) async fn take(
        &mut self,
        store: &dyn CryptoStore,
        key: Curve25519PublicKey,
    ) -> Result<Vec<Session>, StoreError> {
        match self.by_key.remove(&key) {
            Some(sessions) => Ok(sessions),
            None => Ok(store.get_sessions(&key).await?.into_iter().map(Session::from_stored).collect()),
        }
    }

    /// Returns sessions taken with [`take`](Self::take).
    pub(crate) fn put_back(&mut self, key: Curve25519PublicKey, sessions: Vec<Session>) {
        self.by_key.insert(key, sessions);
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
    }
}
