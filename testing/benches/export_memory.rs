//! Peak memory of exporting and importing 100,000 room keys.
//!
//! Run with `cargo xtask bench export` (or `cargo bench -p hush-testing --bench
//! export_memory`). The export reads a store that holds the keys, streaming
//! them to a file on disk; the import reads that file into a store that keeps
//! only a count, so what is measured is the export/import pipeline itself,
//! not the keys a store retains. Linux only: it reads and resets the peak RSS
//! (`VmHWM`) through /proc.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use hush_crypto_core::{
    Changes, CryptoStore, MemoryStore, OlmMachine, StoreError, Timestamp,
    devices::DeviceData,
    megolm::{StoredInboundGroupSession, StoredOutboundGroupSession, WithheldInfo},
    store::{MessageIndexRecord, OlmMessageHash, StoredAccount, StoredSession, TrackedUser},
};
use ruma_common::{DeviceId, OwnedDeviceId, OwnedRoomId, RoomId, UserId, user_id};
use vodozemac::{Curve25519PublicKey, megolm::GroupSession};

const SESSIONS: usize = 100_000;

use hush_testing::memory::{reset_peak_rss as reset_peak, status_kib as rss_kib};

/// A store that keeps the account and only counts room keys.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    room_keys: AtomicUsize,
}

#[async_trait]
impl CryptoStore for CountingStore {
    async fn load_account(&self) -> Result<Option<StoredAccount>, StoreError> {
        self.inner.load_account().await
    }
    async fn save_changes(&self, mut changes: Changes) -> Result<(), StoreError> {
        self.room_keys.fetch_add(changes.inbound_group_sessions.len(), Ordering::Relaxed);
        changes.inbound_group_sessions.clear();
        self.inner.save_changes(changes).await
    }
    async fn get_sessions(&self, key: &Curve25519PublicKey) -> Result<Vec<StoredSession>, StoreError> {
        self.inner.get_sessions(key).await
    }
    async fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceData>, StoreError> {
        self.inner.get_device(user_id, device_id).await
    }
    async fn get_user_devices(&self, user_id: &UserId) -> Result<BTreeMap<OwnedDeviceId, DeviceData>, StoreError> {
        self.inner.get_user_devices(user_id).await
    }
    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, StoreError> {
        self.inner.load_tracked_users().await
    }
    async fn get_devices_by_curve25519(&self, key: &Curve25519PublicKey) -> Result<Vec<DeviceData>, StoreError> {
        self.inner.get_devices_by_curve25519(key).await
    }
    async fn is_olm_message_known(&self, hash: &OlmMessageHash) -> Result<bool, StoreError> {
        self.inner.is_olm_message_known(hash).await
    }
    async fn get_custom_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_custom_value(name).await
    }
    async fn load_next_batch_token(&self) -> Result<Option<String>, StoreError> {
        self.inner.load_next_batch_token().await
    }
    async fn get_inbound_group_session(
        &self,
        _: &RoomId,
        _: &str,
    ) -> Result<Option<StoredInboundGroupSession>, StoreError> {
        Ok(None)
    }
    async fn get_inbound_group_sessions(
        &self,
        _: Option<(&RoomId, &str)>,
        _: usize,
    ) -> Result<Vec<StoredInboundGroupSession>, StoreError> {
        Ok(Vec::new())
    }
    async fn inbound_group_session_count(&self) -> Result<usize, StoreError> {
        Ok(self.room_keys.load(Ordering::Relaxed))
    }
    async fn get_outbound_group_session(&self, _: &RoomId) -> Result<Option<StoredOutboundGroupSession>, StoreError> {
        Ok(None)
    }
    async fn get_withheld_info(&self, _: &RoomId, _: &str, _: &UserId) -> Result<Option<WithheldInfo>, StoreError> {
        Ok(None)
    }
    async fn get_no_olm_notice(&self, _: &UserId, _: &Curve25519PublicKey) -> Result<Option<WithheldInfo>, StoreError> {
        Ok(None)
    }
    async fn get_message_index(&self, _: &RoomId, _: &str, _: u32) -> Result<Option<MessageIndexRecord>, StoreError> {
        Ok(None)
    }
    async fn get_backup_queue(&self, limit: usize) -> Result<Vec<hush_crypto_core::store::RoomKeyRef>, StoreError> {
        self.inner.get_backup_queue(limit).await
    }
    async fn backup_queue_len(&self) -> Result<usize, StoreError> {
        self.inner.backup_queue_len().await
    }
    async fn get_secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>, StoreError> {
        self.inner.get_secret(name).await
    }
    async fn try_lock(
        &self,
        holder: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> Result<hush_crypto_core::store::StoreLease, StoreError> {
        self.inner.try_lock(holder, now, lease).await
    }
    async fn unlock(&self, lease: &hush_crypto_core::store::StoreLease) -> Result<(), StoreError> {
        self.inner.unlock(lease).await
    }
    async fn get_user_identity(
        &self,
        _: &UserId,
    ) -> Result<Option<hush_crypto_core::identities::UserIdentityData>, StoreError> {
        Ok(None)
    }
    async fn load_private_identity(
        &self,
    ) -> Result<Option<hush_crypto_core::identities::PrivateCrossSigningIdentity>, StoreError> {
        Ok(None)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let machine = OlmMachine::open(user_id!("@bench:example.org"), "BENCH".into(), store.clone(), Timestamp::EPOCH)
            .await
            .expect("open");
        // Fill the store with 100,000 room keys, by importing exported keys in pages.
        let started = Instant::now();
        let mut page = Vec::with_capacity(1000);
        for i in 0..SESSIONS {
            let session = GroupSession::new(Default::default());
            let inbound = vodozemac::megolm::InboundGroupSession::new(&session.session_key(), Default::default());
            let room: OwnedRoomId = format!("!room{}:example.org", i % 500).try_into().expect("room id");
            page.push(hush_crypto_core::export::ExportedRoomKey {
                algorithm: "m.megolm.v1.aes-sha2".into(),
                room_id: room,
                sender_key: Curve25519PublicKey::from_bytes([7; 32]).to_base64(),
                session_id: session.session_id(),
                session_key: inbound.export_at_first_known_index().to_base64(),
                sender_claimed_keys: BTreeMap::new(),
                forwarding_curve25519_key_chain: Vec::new(),
                shared_history: false,
            });
            if page.len() == 1000 {
                machine.import_room_keys(std::mem::take(&mut page), |_, _| {}).await.expect("fill");
            }
        }
        println!("filled a store with {SESSIONS} room keys in {:.1?}", started.elapsed());

        let path = std::env::temp_dir().join("hush-export-bench.txt");
        let baseline = rss_kib("VmRSS:");
        reset_peak();
        let started = Instant::now();
        let file = BufWriter::new(File::create(&path).expect("create"));
        let count = machine.export_room_keys_to(file, "benchmark", 1000, |_| true).await.expect("export");
        let export_time = started.elapsed();
        let export_peak = rss_kib("VmHWM:");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "export: {count} keys, {:.1} MiB file, {:.1?}; RSS before {} MiB, peak {} MiB (+{} MiB)",
            size as f64 / 1048576.0,
            export_time,
            baseline / 1024,
            export_peak / 1024,
            export_peak.saturating_sub(baseline) / 1024
        );
        drop(machine);
        drop(store);

        let counting = Arc::new(CountingStore::default());
        let importer =
            OlmMachine::open(user_id!("@bench:example.org"), "IMPORT".into(), counting.clone(), Timestamp::EPOCH)
                .await
                .expect("open");
        let baseline = rss_kib("VmRSS:");
        reset_peak();
        let started = Instant::now();
        let mut input = BufReader::new(File::open(&path).expect("open file"));
        let result = importer.import_room_key_export(&mut input, "benchmark", |_, _| {}).await.expect("import");
        let import_peak = rss_kib("VmHWM:");
        println!(
            "import: {} of {} keys, {:.1?}; RSS before {} MiB, peak {} MiB (+{} MiB)",
            result.imported_count,
            result.total_count,
            started.elapsed(),
            baseline / 1024,
            import_peak / 1024,
            import_peak.saturating_sub(baseline) / 1024
        );
        let _ = std::fs::remove_file(&path);
    });
}
