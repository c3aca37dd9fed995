//! Bootstrapping a replica over the network: ask a server for an image
//! and rebuild the replica from it.
//!
//! The conversation starts as any other (both sides prove they hold the
//! volume's key, docs/PROTOCOL.md), then the replica sends `ImageRequest`
//! instead of `Follow` and receives the image in `ImageChunk`s and an
//! `ImageEnd`. A network thread hands the chunks over a channel of a few
//! chunks to the image reader, which applies them into the volume's
//! staging directory as they come: memory stays bounded, and nothing of
//! the volume changes until the whole image checked ([`crate::image`]).

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::wire::{self, Message};
use crate::image::{self, ImageError, ImageHeader};
use crate::volume::{Bootstrap, SECRET_FILE};
use crate::{Volume, VolumeError};

/// A server writing an image may be silent this long (walking a large
/// directory, or waiting for its replica to finish applying a group).
const IMAGE_SILENCE: Duration = Duration::from_secs(120);
/// Chunks received but not yet applied, at most.
const CHUNKS_AHEAD: usize = 4;

/// Why a bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The server refused, or the connection failed.
    #[error("{0}")]
    Server(String),
    #[error("read the key {}", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Rebuilds the replica volume at `vol` from an image that `server` (a
/// replica that follows with `--listen`) writes for it. The volume is
/// locked first, so a running follower is refused before anything is
/// asked; the server must prove it holds the volume's key and serve the
/// same volume. `progress` is told the image bytes received so far.
pub fn bootstrap_from(
    vol: &Path,
    server: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(Volume, ImageHeader), BootstrapError> {
    let b = Bootstrap::begin(vol)?;
    let key_path = vol.join(SECRET_FILE);
    let key = super::read_key(&key_path).map_err(|source| BootstrapError::Key {
        path: key_path,
        source,
    })?;
    let server = super::with_default_port(server);
    let (tx, rx) = mpsc::sync_channel(CHUNKS_AHEAD);
    let volume = b.volume_id();
    let net = std::thread::Builder::new()
        .name("jfs-bootstrap".into())
        .spawn(move || receive(&server, &key, volume, tx))
        .map_err(|source| ImageError::Io {
            context: "start the network thread".into(),
            source,
        })?;
    let reader = Chunks {
        rx,
        chunk: Vec::new(),
        pos: 0,
    };
    let result = image::bootstrap_into(b, reader, progress);
    // The reader is gone: the network thread stops at its next chunk.
    let _ = net.join();
    match result {
        Ok(r) => Ok(r),
        Err(ImageError::Read { source, .. })
            if source.get_ref().is_some_and(|e| e.is::<NetError>()) =>
        {
            Err(BootstrapError::Server(source.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// What the network thread reports, told apart from errors of the image.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NetError(String);

type Item = Result<Vec<u8>, String>;

/// The network side: sends each chunk, an error, or (by hanging up after
/// `ImageEnd`) the end.
fn receive(server: &str, key: &[u8], volume: crate::VolumeId, tx: mpsc::SyncSender<Item>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(format!("start the network runtime: {e}")));
            return;
        }
    };
    let result: Result<(), String> = runtime.block_on(async {
        let (mut rd, mut wr, _, _) = super::follower::connect(server, key, Some(volume)).await?;
        wire::write(&mut wr, &Message::ImageRequest)
            .await
            .map_err(|e| format!("to {server}: {e}"))?;
        let mut total = 0u64;
        loop {
            match wire::read_within(&mut rd, IMAGE_SILENCE).await {
                Ok(Message::ImageChunk(c)) => {
                    total += c.len() as u64;
                    // Blocks while the reader is behind: this thread does nothing else.
                    if tx.send(Ok(c)).is_err() {
                        return Ok(());
                    }
                }
                Ok(Message::ImageEnd { bytes }) if bytes == total => {
                    let _ = wire::write(&mut wr, &Message::Bye).await;
                    return Ok(());
                }
                Ok(Message::ImageEnd { bytes }) => {
                    return Err(format!(
                        "{server} announced an image of {bytes} bytes but sent {total}"
                    ))
                }
                Ok(Message::Refused { reason, detail }) => {
                    return Err(format!(
                        "refused by {server}: {}: {detail}",
                        reason.as_str()
                    ))
                }
                Ok(other) => {
                    return Err(format!(
                        "{server} sent an unexpected {}",
                        super::server::variant(&other)
                    ))
                }
                Err(e) => return Err(format!("from {server}: {e}")),
            }
        }
    });
    if let Err(e) = result {
        let _ = tx.send(Err(e));
    }
}

/// The image as a byte stream: chunks from the network thread; its hanging
/// up is the end.
struct Chunks {
    rx: mpsc::Receiver<Item>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(NetError(e))),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
