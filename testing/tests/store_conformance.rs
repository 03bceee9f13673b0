//! The conformance suite, unchanged, against every backend and encryption mode.

use hush_testing::{
    conformance::run_all,
    stores::{Encryption, MemoryFactory, RedbFactory, SledFactory},
};

#[tokio::test]
async fn memory_store() {
    run_all(&mut MemoryFactory).await;
}

#[tokio::test]
async fn redb_plain() {
    run_all(&mut RedbFactory::new(Encryption::None)).await;
}

#[tokio::test]
async fn redb_encrypted_with_a_key() {
    run_all(&mut RedbFactory::new(Encryption::RawKey)).await;
}

#[tokio::test]
async fn redb_encrypted_with_a_passphrase() {
    run_all(&mut RedbFactory::new(Encryption::Passphrase)).await;
}

#[tokio::test]
async fn sled_plain() {
    run_all(&mut SledFactory::new(Encryption::None)).await;
}

#[tokio::test]
async fn sled_encrypted_with_a_key() {
    run_all(&mut SledFactory::new(Encryption::RawKey)).await;
}

#[tokio::test]
async fn sled_encrypted_with_a_passphrase() {
    run_all(&mut SledFactory::new(Encryption::Passphrase)).await;
}
