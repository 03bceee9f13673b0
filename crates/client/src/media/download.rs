//! Downloading an encrypted attachment through the authenticated media API:
//! the ciphertext is spooled to a temporary file while it is hashed, the
//! hash checked, and only then decrypted into the caller's writer.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use http_body_util::BodyExt;
use ruma_events::room::EncryptedFile;

use super::{
    AttachmentError, CHUNK, MAX_DOWNLOAD_BYTES,
    cipher::{CiphertextHash, FileDecryptor},
};
use crate::{Client, ClientError};

fn io(error: std::io::Error) -> ClientError {
    ClientError::Io(error.to_string())
}

impl Client {
    /// Downloads and decrypts an encrypted attachment into memory. The
    /// ciphertext's SHA-256 is checked before anything is returned: a
    /// changed file or a wrong hash is [`AttachmentError::HashMismatch`].
    pub async fn download(&self, file: &EncryptedFile) -> Result<Vec<u8>, ClientError> {
        self.download_to(file, Vec::new()).await
    }

    /// Downloads and decrypts an encrypted attachment into `writer`,
    /// streaming: the ciphertext goes to a temporary file while it is
    /// hashed, and nothing is written to `writer` unless the hash matches.
    /// Returns the writer.
    pub async fn download_to<W: Write + Send + 'static>(
        &self,
        file: &EncryptedFile,
        writer: W,
    ) -> Result<W, ClientError> {
        let (decryptor, expected) = FileDecryptor::for_file(file)?;
        let (server, media) = split_mxc(file.url.as_str())?;
        let token = self.access_token()?;
        let path = format!("/_matrix/client/v1/media/download/{server}/{media}");
        let mut body = self.http().get_stream(&path, &token).await?;
        let mut spool = tempfile::tempfile().map_err(io)?;
        let mut hash = CiphertextHash::default();
        let mut total = 0u64;
        let idle = self.http().settings().request_timeout;
        let started = std::time::Instant::now();
        while let Some(frame) = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| crate::http::HttpError::Timeout(idle))?
            .transpose()
            .map_err(|e| crate::http::HttpError::Connection(e.to_string()))?
        {
            let Ok(data) = frame.into_data() else { continue };
            total += data.len() as u64;
            if total > MAX_DOWNLOAD_BYTES {
                return Err(AttachmentError::TooLarge { limit: MAX_DOWNLOAD_BYTES }.into());
            }
            // A trickling server does not hold the download open forever:
            // after the request timeout, at least 64 KiB/s on average.
            let allowed = idle.saturating_add(Duration::from_secs(total / (64 * 1024)));
            if started.elapsed() > allowed {
                return Err(crate::http::HttpError::Timeout(allowed).into());
            }
            hash.update(&data);
            spool.write_all(&data).map_err(io)?;
        }
        if !hash.matches(&expected) {
            return Err(AttachmentError::HashMismatch.into());
        }
        tokio::task::spawn_blocking(move || decrypt_spool(spool, decryptor, writer))
            .await
            .map_err(|e| ClientError::Task(e.to_string()))?
    }
}

fn decrypt_spool<W: Write>(
    mut spool: std::fs::File,
    mut decryptor: FileDecryptor,
    mut writer: W,
) -> Result<W, ClientError> {
    spool.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = spool.read(&mut buffer).map_err(io)?;
        if read == 0 {
            writer.flush().map_err(io)?;
            return Ok(writer);
        }
        let chunk = &mut buffer[..read];
        decryptor.decrypt(chunk);
        writer.write_all(chunk).map_err(io)?;
    }
}

/// The server name and media id of an `mxc://server/media` URL, each
/// checked to be a plain path segment (no `/`, `?`, `#`, `%` or `..`).
fn split_mxc(url: &str) -> Result<(&str, &str), AttachmentError> {
    let bad = || AttachmentError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("mxc://").ok_or_else(bad)?;
    let (server, media) = rest.split_once('/').ok_or_else(bad)?;
    let segment_ok = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
    };
    if !segment_ok(server) || !segment_ok(media) {
        return Err(bad());
    }
    Ok((server, media))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a hostile sender puts path segments or a query in the mxc
    /// URL of an event, to steer our authenticated download elsewhere.
    #[test]
    fn mxc_urls_that_would_leave_the_media_path_are_refused() {
        assert_eq!(split_mxc("mxc://example.org/AbC-123_x").unwrap(), ("example.org", "AbC-123_x"));
        assert_eq!(split_mxc("mxc://127.0.0.1:8008/abc").unwrap(), ("127.0.0.1:8008", "abc"));
        for bad in [
            "https://example.org/abc",
            "mxc://example.org",
            "mxc://example.org/../../_synapse/admin",
            "mxc://example.org/a/b",
            "mxc://example.org/a?access_token=x",
            "mxc://example.org/a%2Fb",
            "mxc:///abc",
            "mxc://example.org/..",
        ] {
            assert!(split_mxc(bad).is_err(), "{bad}");
        }
    }
}
