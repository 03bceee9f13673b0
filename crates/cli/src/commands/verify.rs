//! `verify USER [DEVICE]` and `verify --accept [USER]`: interactive
//! verification in the terminal. SAS by default: the seven emoji with their
//! names and the three numbers, then the user answers whether the other
//! device shows the same (`y`/`n` on standard input, so a script can answer
//! too). With `--qr`, a QR code drawn in the terminal for a phone to scan.

use std::io::BufRead;
use std::time::Duration;

use hush_client::hush_crypto_core::verification::{FlowState, MethodState, QrState, RequestState, SasState};
use hush_client::{Client, Sas, VerificationRequest};
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde_json::json;

use super::user_id;
use crate::error::CliError;
use crate::output::Output;

/// How long one sync of the waiting loop may wait for news.
const POLL: Duration = Duration::from_millis(500);

/// `verify USER [DEVICE]`: asks, then runs SAS (or shows a QR code).
pub(crate) async fn request(
    client: &Client,
    user: &str,
    device: Option<&str>,
    qr: bool,
    timeout: Duration,
    output: Output,
) -> Result<(), CliError> {
    let user = user_id(user)?;
    super::catch_up(client).await?;
    let encryption = client.encryption();
    encryption.refresh_user_keys(&[&user]).await?;
    let request = match device {
        Some(device) => encryption.request_device_verification(&user, &OwnedDeviceId::from(device)).await?,
        None => encryption.request_verification(&user).await?,
    };
    output.print(
        format_args!("asked {user} to verify; waiting for them to accept ({} s at most)", timeout.as_secs()),
        json!({"event": "requested", "user_id": user, "flow_id": request.flow().as_str()}),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let run = async {
        wait_until(client, &request, deadline, |state| matches!(state.request, RequestState::Ready { .. })).await?;
        if qr {
            return show_qr(client, &request, deadline, output).await;
        }
        let sas = request.start_sas().await?;
        compare(client, &request, &sas, deadline, output).await
    };
    cancel_on_error(&request, run.await).await
}

/// `verify --accept [USER]`: waits for a request (from `USER`, if given),
/// accepts it, and runs the SAS the other device starts.
pub(crate) async fn accept(
    client: &Client,
    from: Option<&str>,
    timeout: Duration,
    output: Output,
) -> Result<(), CliError> {
    let from: Option<OwnedUserId> = from.map(user_id).transpose()?;
    let mut updates = client.encryption().verification_updates();
    let deadline = tokio::time::Instant::now() + timeout;
    output.print(
        format_args!("waiting for a verification request ({} s at most)", timeout.as_secs()),
        json!({"event": "waiting"}),
    );
    let request = loop {
        if let Some(request) = incoming(client, &mut updates, from.as_ref()) {
            break request;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Verification("no verification request came in time".into()));
        }
        sync(client).await?;
    };
    output.print(
        format_args!("verification request from {}; accepted", request.other_user()),
        json!({"event": "accepted", "user_id": request.other_user(), "flow_id": request.flow().as_str()}),
    );
    let run = async {
        request.accept().await?;
        compare(client, &request, &request.sas(), deadline, output).await
    };
    cancel_on_error(&request, run.await).await
}

/// A flow this run gives up on (an error, no answer, a failed request) is
/// cancelled, so the other device does not wait for us until it times out.
async fn cancel_on_error(request: &VerificationRequest, outcome: Result<(), CliError>) -> Result<(), CliError> {
    if outcome.is_err() {
        let over = request.state().is_none_or(|state| state.cancellation().is_some()) || request.is_done();
        if !over {
            // Best effort: the error that ended the run is what the user needs.
            let _ = request.cancel().await;
        }
    }
    outcome
}

/// The first incoming request among the updates received so far.
fn incoming(
    client: &Client,
    updates: &mut tokio::sync::broadcast::Receiver<hush_client::VerificationUpdate>,
    from: Option<&OwnedUserId>,
) -> Option<VerificationRequest> {
    while let Ok(update) = updates.try_recv() {
        if update.is_incoming_request() && from.is_none_or(|f| *f == update.user_id) {
            return client.encryption().get_verification_request(&update.user_id, &update.flow);
        }
    }
    None
}

/// Shows the short strings once keys are exchanged, asks the user, and
/// waits for the end.
async fn compare(
    client: &Client,
    request: &VerificationRequest,
    sas: &Sas,
    deadline: tokio::time::Instant,
    output: Output,
) -> Result<(), CliError> {
    wait_until(client, request, deadline, |state| {
        matches!(state.method, Some(MethodState::Sas(SasState::KeysExchanged | SasState::Confirmed)))
    })
    .await?;
    let (Some(emoji), Some(decimals)) = (sas.emoji(), sas.decimals()) else {
        return Err(CliError::Verification("the short strings are not available".into()));
    };
    let line: Vec<String> = emoji.iter().map(|e| format!("{} {}", e.emoji, e.description)).collect();
    output.print(
        format_args!(
            "compare with the other device:\n  {}\nor the numbers: {} {} {}",
            line.join("   "),
            decimals.0,
            decimals.1,
            decimals.2
        ),
        json!({
            "event": "sas",
            "user_id": request.other_user(),
            "emoji": emoji.iter().map(|e| json!({"emoji": e.emoji, "name": e.description})).collect::<Vec<_>>(),
            "decimals": [decimals.0, decimals.1, decimals.2],
        }),
    );
    if ask("Do they match? [y/n] ", deadline).await? {
        sas.confirm().await?;
    } else {
        sas.mismatch().await?;
        return Err(CliError::Verification(
            "the short strings differ: verification cancelled (m.mismatched_sas)".into(),
        ));
    }
    wait_until(client, request, deadline, |_| request.is_done()).await?;
    done(request, output)
}

/// Shows our QR code for the other device to scan, then asks whether the
/// other device shows that the scan succeeded.
async fn show_qr(
    client: &Client,
    request: &VerificationRequest,
    deadline: tokio::time::Instant,
    output: Output,
) -> Result<(), CliError> {
    let (_, image) = request.generate_qr_code().await?;
    // The code holds a secret of this flow: drawn for the eye only, never in JSON.
    eprintln!("scan this code with the other device:\n{}", image.to_unicode());
    output.print(format_args!("waiting for the scan"), json!({"event": "qr_shown", "user_id": request.other_user()}));
    wait_until(client, request, deadline, |state| matches!(state.method, Some(MethodState::Qr(QrState::Scanned))))
        .await?;
    if ask("Does the other device show that the scan succeeded? [y/n] ", deadline).await? {
        request.confirm_qr_scanned().await?;
    } else {
        request.qr_mismatch().await?;
        return Err(CliError::Verification("the scan did not succeed: verification cancelled".into()));
    }
    wait_until(client, request, deadline, |_| request.is_done()).await?;
    done(request, output)
}

fn done(request: &VerificationRequest, output: Output) -> Result<(), CliError> {
    output.print(
        format_args!("verified {}", request.other_user()),
        json!({"event": "done", "verified": true, "user_id": request.other_user()}),
    );
    Ok(())
}

/// Syncs until `reached` holds for the flow; a cancelled flow, or the
/// deadline, ends the wait with an error.
async fn wait_until(
    client: &Client,
    request: &VerificationRequest,
    deadline: tokio::time::Instant,
    reached: impl Fn(&FlowState) -> bool,
) -> Result<(), CliError> {
    loop {
        let state = request.state().ok_or_else(|| CliError::Verification("the verification was forgotten".into()))?;
        if reached(&state) {
            return Ok(());
        }
        if let Some(cancellation) = state.cancellation() {
            let code = cancellation.code.as_str();
            return Err(CliError::Verification(format!("the verification was cancelled: {code}")));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = request.cancel().await;
            return Err(CliError::Verification("the verification timed out".into()));
        }
        sync(client).await?;
    }
}

async fn sync(client: &Client) -> Result<(), CliError> {
    client.sync_once(hush_client::SyncSettings::default().timeout(POLL)).await?;
    Ok(())
}

/// Asks a yes/no question on stderr; the answer is a line on stdin, read
/// until the flow's deadline (a thread reads it, so the wait can end; the
/// thread ends with the process).
async fn ask(question: &str, deadline: tokio::time::Instant) -> Result<bool, CliError> {
    eprint!("{question}");
    let (sender, answered) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        let _ = sender.send(read.map(|read| (read, answer)));
    });
    let (read, answer) = match tokio::time::timeout_at(deadline, answered).await {
        Ok(Ok(read)) => read?,
        Ok(Err(_)) => return Err(CliError::Usage("standard input could not be read".into())),
        Err(_) => return Err(CliError::Verification("no answer came in time".into())),
    };
    if read == 0 {
        return Err(CliError::Usage("no answer on standard input".into()));
    }
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        other => Err(CliError::Usage(format!("answer y or n, not {other:?}"))),
    }
}
