//! Keeping the server stocked with our device keys, one-time keys and fallback key.

use ruma_client_api::keys::upload_keys;

use super::{OlmMachine, lock};
use crate::{AnyOutgoingRequest, StoreError, requests::Meta, store::Changes};

impl OlmMachine {
    /// Lists a keys upload if the account holds keys the server lacks and no
    /// upload is already waiting for its answer.
    pub(super) async fn ensure_keys_upload_listed(&self) -> Result<(), StoreError> {
        let account = self.inner.account.lock().await;
        if lock(&self.inner.requests).has_keys_upload() {
            return Ok(());
        }
        let request = account.keys_for_upload().map_err(|e| StoreError::serialization("keys upload", e))?;
        if let Some(request) = request {
            tracing::debug!(
                one_time_keys = request.one_time_keys.len(),
                fallback_keys = request.fallback_keys.len(),
                device_keys = request.device_keys.is_some(),
                "keys upload needed"
            );
            self.queue(AnyOutgoingRequest::KeysUpload(request), Meta::KeysUpload);
        }
        Ok(())
    }

    /// The server stored our keys: mark them published and save the account.
    pub(super) async fn receive_keys_upload_response(
        &self,
        response: &upload_keys::v3::Response,
    ) -> Result<(), StoreError> {
        let mut account = self.inner.account.lock().await;
        let first_publication = !account.device_keys_published();
        account.mark_keys_as_published(&response.one_time_key_counts);
        account.generate_one_time_keys_if_needed();
        let changes = Changes { account: Some(account.to_stored()), ..Default::default() };
        self.save(Some(&mut account), None, changes).await?;
        drop(account);
        if first_publication {
            // Cross-signing bootstrapped before our keys were on the server.
            self.queue_own_device_signature();
        }
        Ok(())
    }
}
