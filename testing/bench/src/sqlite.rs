//! matrix-sdk-crypto's SQLite store (matrix-sdk-sqlite) as a [`BenchStore`].

use std::path::Path;

use async_trait::async_trait;
use matrix_sdk_crypto::{
    olm::{InboundGroupSession, SenderData},
    store::{CryptoStore, types::Changes},
    types::EventEncryptionAlgorithm,
    vodozemac::{
        Curve25519PublicKey, Curve25519SecretKey, Ed25519Keypair,
        megolm::{GroupSession, SessionConfig},
    },
};
use matrix_sdk_sqlite::SqliteCryptoStore;
use ruma::RoomId;

use crate::stores::{Batch, BenchStore, KeyId};

/// The SQLite crypto store.
pub struct Sqlite(SqliteCryptoStore);

impl Sqlite {
    /// Opens the store in the directory `path`; `encrypted` uses a raw key.
    pub async fn open(path: &Path, encrypted: bool) -> Self {
        let key = [42u8; 32];
        let store =
            SqliteCryptoStore::open_with_key(path, encrypted.then_some(&key[..])).await.expect("open sqlite store");
        Self(store)
    }
}

#[async_trait]
impl BenchStore for Sqlite {
    fn fixtures(&self, count: usize, room: &RoomId) -> Batch {
        let curve = Curve25519PublicKey::from(&Curve25519SecretKey::new());
        let ed = Ed25519Keypair::new().public_key();
        Batch::Sdk(
            (0..count)
                .map(|_| {
                    let key = GroupSession::new(SessionConfig::version_1()).session_key();
                    InboundGroupSession::new(
                        curve,
                        ed,
                        room,
                        &key,
                        SenderData::unknown(),
                        None,
                        EventEncryptionAlgorithm::MegolmV1AesSha2,
                        None,
                        false,
                    )
                    .expect("session")
                })
                .collect(),
        )
    }

    async fn save(&self, batch: Batch) {
        let Batch::Sdk(sessions) = batch else { panic!("a hush batch for the sqlite store") };
        self.0.save_changes(Changes { inbound_group_sessions: sessions, ..Default::default() }).await.expect("save");
    }

    async fn lookup(&self, (room, session): &KeyId) -> bool {
        self.0.get_inbound_group_session(room, session).await.expect("lookup").is_some()
    }
}
