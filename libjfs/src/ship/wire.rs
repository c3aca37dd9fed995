//! The replication protocol: messages, their framing, and the key proof.
//!
//! Every message travels in a frame laid out like a journal frame:
//!
//! ```text
//! frame = len:u32le | pcrc:u32le | hcrc:u32le | payload[len]
//!         pcrc = crc32c(payload), hcrc = crc32c(len bytes || pcrc bytes)
//! payload = postcard(Message)
//! ```
//!
//! The header has its own checksum, so a damaged length is caught before
//! anything waits for bytes that will never come. docs/PROTOCOL.md walks
//! through a whole conversation.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::format::VolumeId;
use crate::position::Position;
use crate::record::Timestamp;

/// Protocol version; both sides must speak the same.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest payload a frame may carry.
pub const MAX_MESSAGE: usize = 32 << 20;
const FRAME_HEADER: usize = 12;

pub type Nonce = [u8; 32];
pub type Mac32 = [u8; 32];

/// Up to where a replica asks to be sent records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Until {
    /// Everything, as it comes.
    Head,
    /// Records up to and including this seq.
    Seq(u64),
    /// Records up to and including the marker of this snapshot.
    Snapshot(String),
}

/// Why a server will not serve a replica. Each is final for that replica
/// until an operator acts, except `Busy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Version,
    UnknownVolume,
    WrongKey,
    Diverged,
    Trimmed,
    Ahead,
    Busy,
    Protocol,
    /// The server gives no images (a master's mount: its tree changes under writes).
    NoImage,
}

impl Refusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Version => "protocol version mismatch",
            Refusal::UnknownVolume => "unknown volume",
            Refusal::WrongKey => "wrong key",
            Refusal::Diverged => "diverged",
            Refusal::Trimmed => "history trimmed",
            Refusal::Ahead => "replica ahead of the server",
            Refusal::Busy => "server busy",
            Refusal::Protocol => "protocol error",
            Refusal::NoImage => "no image here",
        }
    }
}

/// One protocol message. Replica to server: `Hello`, `Proof`, `Follow`,
/// `Ack`, `Bye`, `ImageRequest`. Server to replica: the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Hello {
        version: u32,
        /// The volume the replica belongs to; `None` while it joins.
        volume: Option<VolumeId>,
        nonce: Nonce,
    },
    Challenge {
        volume: VolumeId,
        nonce: Nonce,
    },
    /// The replica's proof that it holds the key.
    Proof {
        mac: Mac32,
    },
    /// The server's proof, and where its journal ends.
    Welcome {
        mac: Mac32,
        head: Position,
    },
    Follow {
        from: Position,
        until: Until,
        /// The replica's id, stable across its restarts.
        replica: String,
        /// Where the replica serves others, for the server's status.
        listen: Option<String>,
    },
    /// A sealed segment of `bytes` bytes follows in `SegmentChunk`s.
    Segment {
        first_seq: u64,
        last_seq: u64,
        bytes: u64,
    },
    SegmentChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Records after `prev` up to `end`: zstd of postcard `Vec<bytes>`.
    Batch {
        prev: Position,
        end: Position,
        count: u32,
        raw_len: u32,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Sent when idle: the server's head and clock.
    Heartbeat {
        head: Position,
        time: Timestamp,
    },
    /// The snapshot marker asked for in `Follow` is at `at`; nothing more follows.
    Pinned {
        at: Position,
    },
    Refused {
        reason: Refusal,
        detail: String,
    },
    /// Everything up to `applied` is in the replica's journal and tree, and
    /// its journal is durable up to `durable`.
    Ack {
        applied: Position,
        durable: Position,
    },
    Bye,
    /// Instead of `Follow`: send an image of the server's tree and attic at
    /// one position (docs/FORMAT.md), to bootstrap a replica from.
    ImageRequest,
    /// The next bytes of the image.
    ImageChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The image is complete: `bytes` in all. The server then closes.
    ImageEnd {
        bytes: u64,
    },
}

/// A broken conversation.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("damaged message on the wire: {0}")]
    Corrupt(String),
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("no message within {0:?}")]
    Timeout(std::time::Duration),
}

/// Encodes one message as a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let payload = postcard::to_stdvec(msg).expect("messages always encode");
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let hcrc = crc32c::crc32c(&out[0..8]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> Result<(), WireError> {
    w.write_all(&encode(msg)).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes its message, verifying both checksums.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Message, WireError> {
    let mut header = [0u8; FRAME_HEADER];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    if crc32c::crc32c(&header[0..8]) != word(8) {
        return Err(WireError::Corrupt("frame header checksum mismatch".into()));
    }
    let len = word(0) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::Corrupt(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if crc32c::crc32c(&payload) != word(4) {
        return Err(WireError::Corrupt("frame checksum mismatch".into()));
    }
    postcard::from_bytes(&payload)
        .map_err(|e| WireError::Corrupt(format!("message does not decode: {e}")))
}

/// `read` with a deadline.
pub async fn read_within<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: std::time::Duration,
) -> Result<Message, WireError> {
    tokio::time::timeout(limit, read(r))
        .await
        .map_err(|_| WireError::Timeout(limit))?
}

/// Which side a proof comes from: the two labels keep one side's proof from
/// being replayed as the other's.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Replica,
    Server,
}

/// HMAC-SHA-256 over the side, the volume and both nonces, keyed by the
/// volume's secret. The secret itself never crosses the wire.
pub fn proof(key: &[u8], side: Side, volume: VolumeId, replica: &Nonce, server: &Nonce) -> Mac32 {
    mac(key, side, volume, replica, server)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof in constant time.
pub fn check_proof(
    key: &[u8],
    side: Side,
    volume: VolumeId,
    replica: &Nonce,
    server: &Nonce,
    given: &Mac32,
) -> bool {
    mac(key, side, volume, replica, server)
        .verify_slice(given)
        .is_ok()
}

fn mac(key: &[u8], side: Side, volume: VolumeId, replica: &Nonce, server: &Nonce) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(match side {
        Side::Replica => b"jfs replica proof v1",
        Side::Server => b"jfs server proof v1\0",
    });
    m.update(&volume.0);
    m.update(replica);
    m.update(server);
    m
}

/// A fresh random nonce.
pub fn nonce() -> Nonce {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("the kernel's random source works");
    n
}

/// Packs records into a `Batch` message.
pub fn batch(prev: Position, end: Position, records: &[Vec<u8>]) -> Message {
    let raw = postcard::to_stdvec(
        &records
            .iter()
            .map(|r| serde_bytes::Bytes::new(r))
            .collect::<Vec<_>>(),
    )
    .expect("records always encode");
    let body = zstd::bulk::compress(&raw, 1).expect("compression of memory cannot fail");
    Message::Batch {
        prev,
        end,
        count: records.len() as u32,
        raw_len: raw.len() as u32,
        body,
    }
}

/// Unpacks a `Batch` body, bounded by its declared size, and checks that the
/// records continue `prev` to `end` on the chain.
pub fn unbatch(
    prev: Position,
    end: Position,
    count: u32,
    raw_len: u32,
    body: &[u8],
) -> Result<Vec<Vec<u8>>, WireError> {
    if raw_len as usize > MAX_MESSAGE * 4 {
        return Err(WireError::Corrupt(format!(
            "batch declares {raw_len} bytes"
        )));
    }
    let raw = zstd::bulk::decompress(body, raw_len as usize)
        .map_err(|e| WireError::Corrupt(format!("batch does not decompress: {e}")))?;
    let records: Vec<serde_bytes::ByteBuf> = postcard::from_bytes(&raw)
        .map_err(|e| WireError::Corrupt(format!("batch does not decode: {e}")))?;
    if records.len() != count as usize {
        return Err(WireError::Corrupt(
            "batch holds another number of records than it says".into(),
        ));
    }
    let mut at = prev;
    for r in &records {
        at = at.next(r);
    }
    if at != end || end.seq != prev.seq + count as u64 {
        return Err(WireError::Corrupt(format!(
            "batch records lead from {prev} to {at}, not to {end}"
        )));
    }
    Ok(records.into_iter().map(|b| b.into_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_side_volume_and_nonces() {
        let (key, vol) = (b"k".as_slice(), VolumeId([1; 16]));
        let (a, b) = ([2u8; 32], [3u8; 32]);
        let p = proof(key, Side::Replica, vol, &a, &b);
        assert!(check_proof(key, Side::Replica, vol, &a, &b, &p));
        assert!(!check_proof(key, Side::Server, vol, &a, &b, &p));
        assert!(!check_proof(b"K", Side::Replica, vol, &a, &b, &p));
        assert!(!check_proof(
            key,
            Side::Replica,
            VolumeId([9; 16]),
            &a,
            &b,
            &p
        ));
        assert!(!check_proof(key, Side::Replica, vol, &b, &a, &p));
    }

    #[tokio::test]
    async fn frames_round_trip_and_every_flipped_bit_is_caught() {
        let msg = Message::Heartbeat {
            head: Position {
                seq: 42,
                chain: [7; 32],
            },
            time: Timestamp::new(1, 2),
        };
        let frame = encode(&msg);
        assert_eq!(read(&mut frame.as_slice()).await.unwrap(), msg);
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match read(&mut bad.as_slice()).await {
                Err(WireError::Corrupt(_)) | Err(WireError::Io(_)) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn batches_check_the_chain() {
        let prev = Position {
            seq: 10,
            chain: [5; 32],
        };
        let records = vec![b"one".to_vec(), b"two".to_vec()];
        let end = prev.next(&records[0]).next(&records[1]);
        let Message::Batch {
            count,
            raw_len,
            body,
            ..
        } = batch(prev, end, &records)
        else {
            unreachable!()
        };
        assert_eq!(unbatch(prev, end, count, raw_len, &body).unwrap(), records);
        let other = Position {
            seq: 12,
            chain: [0; 32],
        };
        assert!(unbatch(prev, other, count, raw_len, &body).is_err());
        assert!(unbatch(prev, end, count + 1, raw_len, &body).is_err());
    }
}
