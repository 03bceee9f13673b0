//! Uploading an attachment as a stream: a blocking task reads the source in
//! chunks, encrypts and hashes each, and hands it to the request body
//! through a small channel, so at most a few chunks are in memory.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use ruma_common::OwnedMxcUri;
use ruma_events::room::EncryptedFile;
use tokio::sync::mpsc;

use super::{AttachmentData, AttachmentError, CHUNK, cipher::FileEncryptor};
use crate::{Client, ClientError};

/// Chunks in flight between the reader and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A request body fed chunk by chunk from a channel, of a known length.
pub(crate) struct UploadBody {
    chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    length: u64,
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.chunks.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

/// What an upload produced.
pub(crate) struct Uploaded {
    /// Where the server keeps it.
    pub(crate) url: OwnedMxcUri,
    /// How it was encrypted (for an encrypted upload).
    pub(crate) file: Option<EncryptedFile>,
    /// Its size in bytes.
    pub(crate) size: u64,
}

fn open(data: AttachmentData) -> Result<(Box<dyn Read + Send>, u64), ClientError> {
    Ok(match data {
        AttachmentData::Bytes(bytes) => {
            let length = bytes.len() as u64;
            (Box::new(std::io::Cursor::new(bytes)), length)
        }
        AttachmentData::File(path) => {
            let file = std::fs::File::open(&path).map_err(|e| ClientError::Io(format!("{}: {e}", path.display())))?;
            let length = file.metadata().map_err(|e| ClientError::Io(format!("{}: {e}", path.display())))?.len();
            (Box::new(file), length)
        }
        AttachmentData::Reader { reader, length } => (reader, length),
    })
}

/// Reads `length` bytes of `reader` in chunks, encrypting them if asked, into `out`.
fn produce(
    mut reader: Box<dyn Read + Send>,
    length: u64,
    mut encryptor: Option<FileEncryptor>,
    out: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<Option<FileEncryptor>, ClientError> {
    let mut sent = 0u64;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let want = usize::try_from(length.saturating_sub(sent).min(CHUNK as u64)).unwrap_or(CHUNK);
        // With nothing left to read, one more byte is asked for: a reader
        // longer than announced is an error.
        let asked = want.max(1);
        let read = reader.read(&mut buffer[..asked]).map_err(|e| ClientError::Io(e.to_string()))?.min(asked);
        if want == 0 && read > 0 || want > 0 && read == 0 {
            let error = AttachmentError::LengthMismatch { expected: length, got: sent + read as u64 };
            let _ = out.blocking_send(Err(std::io::Error::other(error.to_string())));
            return Err(error.into());
        }
        if read == 0 {
            return Ok(encryptor);
        }
        let chunk = &mut buffer[..read];
        if let Some(encryptor) = encryptor.as_mut() {
            encryptor.encrypt(chunk);
        }
        sent += read as u64;
        if out.blocking_send(Ok(Bytes::copy_from_slice(chunk))).is_err() {
            // The connection went away; the request reports why.
            return Ok(encryptor);
        }
    }
}

impl Client {
    /// Uploads `data` (encrypted if asked) through `/_matrix/media/v3/upload`,
    /// streaming it. Not retried: a reader cannot be read twice.
    pub(crate) async fn upload_stream(
        &self,
        data: AttachmentData,
        name: Option<&str>,
        content_type: &str,
        encrypt: bool,
    ) -> Result<Uploaded, ClientError> {
        let token = self.access_token()?;
        let (reader, length) = open(data)?;
        let encryptor = if encrypt { Some(FileEncryptor::new()?) } else { None };
        let (sender, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let producer = tokio::task::spawn_blocking(move || produce(reader, length, encryptor, &sender));
        let body = UploadBody { chunks, length };
        let answer = self.http().upload(body, name, content_type, &token).await;
        let encryptor = producer.await.map_err(|e| ClientError::Task(e.to_string()))??;
        let answer: serde_json::Value =
            serde_json::from_slice(&answer?).map_err(|e| AttachmentError::UploadAnswer(e.to_string()))?;
        let url =
            answer["content_uri"].as_str().ok_or_else(|| AttachmentError::UploadAnswer(answer.to_string()))?.to_owned();
        let url = OwnedMxcUri::from(url);
        if !url.is_valid() {
            return Err(AttachmentError::UploadAnswer(format!("not an mxc:// URL: {url}")).into());
        }
        let file = encryptor.map(|e| e.finish(url.clone()));
        Ok(Uploaded { url, file, size: length })
    }
}
