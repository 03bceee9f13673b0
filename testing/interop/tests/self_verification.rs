//! Issue 30, finding 7a: self-verification between a hush device and a
//! matrix-sdk-crypto 0.19.1 device of the same user, where the sdk device
//! made the cross-signing keys (so the master key carries its own
//! self-signature and the sdk device's signature). Once SAS is done, hush
//! signs the master key with its device key and uploads the signature. The
//! in-process server refuses, as Synapse does, an upload of one's own
//! master key carrying any signature that is not one of one's devices':
//! hush must upload only its new signature for the server to take it.
//!
//! matrix-sdk-crypto checks request timestamps against the wall clock, so
//! the virtual clock starts at the real time here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_crypto_core::verification::{MethodState, RequestState, SasState};
use hush_interop::SdkDevice;
use hush_testing::{TestDevice, TestServer, VirtualClock};
use ruma::{OwnedUserId, api::client::keys::get_keys, events::key::verification::VerificationMethod, owned_user_id};
use serde_json::Value;

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

/// The master key of Alice's the server lists, as JSON.
fn server_master_key(server: &TestServer) -> Value {
    let mut query = get_keys::v3::Request::new();
    query.device_keys.insert(alice(), Vec::new());
    let answer = server.query_keys_as(&alice(), &query);
    let master = answer.master_keys.get(&alice()).expect("alice has a master key");
    master.deserialize_as_unchecked().expect("json")
}

#[tokio::test]
async fn self_verification_with_an_sdk_device_that_made_the_keys_uploads_a_signature_the_server_takes() {
    let server = Arc::new(TestServer::new());
    let clock = VirtualClock::default();
    let real = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    clock.advance(real.saturating_sub(Duration::from_millis(clock.now().as_millis())));
    let mut sdk = SdkDevice::new(&server, &alice(), "SDK1").await;
    sdk.bootstrap_cross_signing(false).await;
    let signers: Vec<String> =
        server_master_key(&server)["signatures"][alice().as_str()].as_object().expect("signed").keys().cloned().collect();
    assert!(signers.len() >= 2, "the sdk self-signed the master key and signed it with its device: {signers:?}");
    let mut hush = TestDevice::new(&server, &clock, &alice(), "HUSH1").await;
    hush.refresh_keys(&[&alice()]).await;
    sdk.machine.update_tracked_users([alice().as_ref()]).await.expect("track");
    sdk.machine.mark_all_tracked_users_as_dirty().await.expect("dirty");
    sdk.drain().await;

    let flow = hush.machine.request_verification(&alice(), None, clock.now()).await.expect("request");
    hush.drain().await;
    exchange(&mut hush, &mut sdk).await;
    let request = sdk.machine.get_verification_request(&alice(), flow.as_str()).expect("the sdk got the request");
    let methods = vec![VerificationMethod::SasV1];
    let ready = request.accept_with_methods(methods).expect("a request to accept");
    sdk.send_verification(ready).await;
    exchange(&mut hush, &mut sdk).await;
    assert!(matches!(hush.machine.verification_state(&alice(), &flow).unwrap().request, RequestState::Ready { .. }));
    hush.machine.start_sas(&alice(), &flow, clock.now()).await.expect("start");
    hush.drain().await;
    exchange(&mut hush, &mut sdk).await;
    let sas = sdk.machine.get_verification(&alice(), flow.as_str()).and_then(|v| v.sas_v1()).expect("the sdk's SAS");
    sdk.send_verification(sas.accept().expect("accepted")).await;
    exchange(&mut hush, &mut sdk).await;
    let emoji: Vec<u8> = hush.machine.sas_emoji(&alice(), &flow).expect("emoji").iter().map(|e| e.number).collect();
    assert_eq!(Some(emoji), sas.emoji_index().map(|i| i.to_vec()), "the same emoji");

    hush.machine.confirm_verification(&alice(), &flow, clock.now()).await.expect("confirm");
    hush.drain().await;
    let (requests, signatures) = sas.confirm().await.expect("the sdk confirms");
    for request in requests {
        sdk.send_verification(request).await;
    }
    if let Some(signatures) = signatures {
        let answer = sdk.upload_signatures(&signatures);
        assert!(answer.failures.is_empty(), "the server refused the sdk's signature of HUSH1: {:?}", answer.failures);
    }
    exchange(&mut hush, &mut sdk).await;
    let state = hush.machine.verification_state(&alice(), &flow).expect("flow");
    assert!(matches!(state.method, Some(MethodState::Sas(SasState::Done { .. }))), "{state:?}");
    assert!(sas.is_done(), "sdk: {:?}", sas.state());

    let master = server_master_key(&server);
    let hush_signature = &master["signatures"][alice().as_str()]["ed25519:HUSH1"];
    assert!(hush_signature.is_string(), "the server holds no signature of HUSH1 on the master key: {master}");
}

/// A few rounds of both sides reading their to-device messages.
async fn exchange(hush: &mut TestDevice, sdk: &mut SdkDevice) {
    for _ in 0..3 {
        hush.sync().await;
        sdk.sync().await;
    }
}
