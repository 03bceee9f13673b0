//! Attachments (spec: "Sending encrypted attachments"). In an encrypted
//! room a file is encrypted with AES-256-CTR under a fresh key and IV,
//! hashed (SHA-256 of the ciphertext), uploaded, and sent as `m.file` /
//! `m.image` / `m.video` / `m.audio` with its [`EncryptedFile`]; a download
//! is hashed while it is spooled to a temporary file, checked against the
//! event's hash before a single byte is returned, then decrypted. Both ways
//! stream in fixed chunks, so memory does not grow with the file.

mod cipher;
mod download;
mod upload;

use std::io::Read;
use std::path::PathBuf;

pub use ruma_events::room::EncryptedFile;

pub(crate) use upload::UploadBody;

/// How large a chunk is read, encrypted and sent (and decrypted) at a time.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The largest file a download spools before it gives up: a server cannot
/// fill the disk with an endless answer.
pub const MAX_DOWNLOAD_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The bytes of an attachment.
pub enum AttachmentData {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file on disk, read as it is uploaded.
    File(PathBuf),
    /// Any reader, read as it is uploaded; it must yield exactly `length` bytes.
    Reader {
        /// The reader.
        reader: Box<dyn Read + Send>,
        /// How many bytes it yields.
        length: u64,
    },
}

impl std::fmt::Debug for AttachmentData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Reader { length, .. } => write!(f, "Reader({length} bytes)"),
        }
    }
}

/// Why an attachment could not be sent or downloaded.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// The downloaded ciphertext does not hash to the event's SHA-256: the
    /// file was changed, or the event's hash is wrong. Nothing was returned.
    #[error("the downloaded file does not match its SHA-256 hash (tampered, or a wrong hash); nothing was returned")]
    HashMismatch,
    /// The file's encryption info names no SHA-256 hash to check against.
    #[error("the encrypted file has no SHA-256 hash to check; refused")]
    NoSha256,
    /// The file uses an encryption version this client does not know.
    #[error("unsupported attachment encryption version {0:?} (only v2 is supported)")]
    UnsupportedVersion(String),
    /// The `mxc://` URL is not one this client can download.
    #[error("not a downloadable mxc:// URL: {0}")]
    BadUrl(String),
    /// The download is larger than [`MAX_DOWNLOAD_BYTES`].
    #[error("the download is larger than {limit} bytes; refused")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// A reader gave a different number of bytes than announced.
    #[error("the attachment's reader gave {got} bytes, {expected} were announced")]
    LengthMismatch {
        /// The announced length.
        expected: u64,
        /// What the reader gave (at least).
        got: u64,
    },
    /// The server's upload answer has no `content_uri`.
    #[error("the media upload answer has no content_uri: {0}")]
    UploadAnswer(String),
}

/// The `msgtype` a file of `mime` is sent as.
pub(crate) fn msgtype_for(mime: &str) -> &'static str {
    match mime.split('/').next().unwrap_or_default() {
        "image" => "m.image",
        "video" => "m.video",
        "audio" => "m.audio",
        _ => "m.file",
    }
}

impl crate::Room {
    /// Sends a file. In an encrypted room it is encrypted (AES-256-CTR,
    /// fresh key), hashed and uploaded as a stream, then sent as `m.file` /
    /// `m.image` / `m.video` / `m.audio` (by `mime`) with its
    /// [`EncryptedFile`] inside the encrypted event; in a room known to be
    /// unencrypted it is uploaded as it is. The upload is not retried.
    pub async fn send_attachment(
        &self,
        name: &str,
        mime: &str,
        data: AttachmentData,
    ) -> Result<crate::SendResult, crate::ClientError> {
        let mut state = self.state()?;
        if state.encryption_state() == crate::EncryptionState::Unknown {
            state = self.learn_encryption_state().await?;
        }
        let encrypted = state.is_encrypted();
        let content_type = if encrypted { "application/octet-stream" } else { mime };
        // An encrypted file's name stays inside the encrypted event.
        let upload_name = if encrypted { None } else { Some(name) };
        let uploaded = self.client.upload_stream(data, upload_name, content_type, encrypted).await?;
        if !encrypted && self.state()?.is_encrypted() {
            // Encryption was switched on during the upload: the file is on
            // the server in the clear, and is not sent into the room.
            return Err(crate::ClientError::EncryptionStateUnknown {
                room_id: self.room_id.to_string(),
                reason: "encryption was switched on while the file was uploaded unencrypted; send it again".into(),
            });
        }
        let mut content = serde_json::json!({
            "msgtype": msgtype_for(mime),
            "body": name,
            "filename": name,
            "info": {"mimetype": mime, "size": uploaded.size},
        });
        match uploaded.file {
            Some(file) => content["file"] = serde_json::to_value(&file).map_err(crate::ClientError::serialization)?,
            None => content["url"] = serde_json::json!(uploaded.url),
        }
        self.send("m.room.message", content).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgtypes_follow_the_mime_type() {
        assert_eq!(msgtype_for("image/png"), "m.image");
        assert_eq!(msgtype_for("video/mp4"), "m.video");
        assert_eq!(msgtype_for("audio/ogg"), "m.audio");
        assert_eq!(msgtype_for("application/pdf"), "m.file");
        assert_eq!(msgtype_for(""), "m.file");
    }
}
