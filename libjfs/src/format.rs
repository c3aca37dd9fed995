//! Byte layouts of journal files: segment headers and record frames.
//!
//! Pure bytes-to-structs: no I/O. Every layout here is drawn in
//! docs/FORMAT.md; a change to one is a change of [`FORMAT_VERSION`].
//!
//! ```text
//! frame   = len:u32le | pcrc:u32le | hcrc:u32le | payload[len]
//!           pcrc = crc32c(payload), hcrc = crc32c(len bytes || pcrc bytes)
//! active  = ActiveHeader (80 bytes)  | frame*
//! sealed  = SealedHeader (168 bytes) | body           body = zstd(frame*) or frame*
//! ```

use std::fmt;

use crate::position::{Chain, Position};
use crate::record::{MAX_RECORD, MAX_SEQ};

/// The on-disk format version this code writes.
///
/// Version 2 differs from version 1 in one field: a sealed segment checks
/// its body with XXH3-128 where version 1 took SHA-256 (see [`BodySum`]).
/// Both are read.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this code reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// First bytes of an active (appendable) segment.
pub const ACTIVE_MAGIC: [u8; 8] = *b"JFSACTV\0";
/// First bytes of a sealed (immutable) segment.
pub const SEALED_MAGIC: [u8; 8] = *b"JFSSEAL\0";
pub const ACTIVE_HEADER_LEN: usize = 80;
pub const SEALED_HEADER_LEN: usize = 168;
pub const FRAME_HEADER_LEN: usize = 12;
/// Largest uncompressed body a sealed segment may declare (decompression bound).
pub const MAX_SEGMENT_RAW: u64 = 1 << 30;

/// Body compression of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// Identity of a volume: every segment names the volume it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct VolumeId(pub [u8; 16]);

impl VolumeId {
    pub fn random() -> VolumeId {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
        VolumeId(b)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeId({self})")
    }
}

/// Why a header did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header is truncated ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("bad magic {0:02x?} (not a jfs segment of this kind)")]
    BadMagic([u8; 8]),
    #[error(
        "format version {0} is not supported (this build reads versions \
         {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("header checksum mismatch")]
    Checksum,
    #[error("header field out of range: {0}")]
    Field(&'static str),
}

/// Header of the active segment: who it belongs to and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveHeader {
    pub volume_id: VolumeId,
    /// Sequence number of the first record this segment holds.
    pub first_seq: u64,
    /// Chain value before the first record.
    pub prev_chain: Chain,
}

impl ActiveHeader {
    /// The position just before the segment's first record.
    pub fn start(&self) -> Position {
        Position {
            seq: self.first_seq - 1,
            chain: self.prev_chain,
        }
    }

    pub fn encode(&self) -> [u8; ACTIVE_HEADER_LEN] {
        let mut b = [0u8; ACTIVE_HEADER_LEN];
        b[0..8].copy_from_slice(&ACTIVE_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..16: flags and reserved, zero.
        b[16..32].copy_from_slice(&self.volume_id.0);
        b[32..40].copy_from_slice(&self.first_seq.to_le_bytes());
        b[40..72].copy_from_slice(&self.prev_chain);
        let crc = crc32c::crc32c(&b[0..72]);
        b[72..76].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<ActiveHeader, HeaderError> {
        check_prefix(b, ACTIVE_HEADER_LEN, &ACTIVE_MAGIC)?;
        if crc32c::crc32c(&b[0..72]) != u32_at(b, 72) {
            return Err(HeaderError::Checksum);
        }
        if b[10..16] != [0; 6] || b[76..80] != [0; 4] {
            return Err(HeaderError::Field("reserved bytes are not zero"));
        }
        let h = ActiveHeader {
            volume_id: VolumeId(b[16..32].try_into().unwrap()),
            first_seq: u64_at(b, 32),
            prev_chain: b[40..72].try_into().unwrap(),
        };
        if h.first_seq == 0 || h.first_seq > MAX_SEQ {
            return Err(HeaderError::Field("first seq is 0 or too large"));
        }
        Ok(h)
    }
}

/// Header of a sealed segment: its range, chain ends and body checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    pub volume_id: VolumeId,
    pub compression: Compression,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Chain before `first_seq`.
    pub prev_chain: Chain,
    /// Chain after `last_seq`.
    pub last_chain: Chain,
    /// Length of the frames once decompressed.
    pub raw_len: u64,
    /// Length of the stored body that follows the header.
    pub body_len: u64,
    /// Checksum of the stored body; its kind is the header's version.
    pub body_sum: BodySum,
}

/// The checksum of a sealed segment's stored body, which a reader checks
/// before it decompresses a byte.
///
/// It guards against damage on the disk or the wire, as each frame's
/// CRC-32C does; what the records say is bound by the chain, SHA-256 over
/// every payload, which each reader computes again. So version 2 takes a
/// fast 128-bit checksum here: SHA-256 (version 1) was a second
/// cryptographic pass over every byte beside the chain's, and a large
/// write through the mount paid for it (docs/PERFORMANCE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySum {
    /// Format version 1: SHA-256.
    Sha256([u8; 32]),
    /// Format version 2: XXH3-128 (default seed and secret); the 16 bytes
    /// after it in the header are zero.
    Xxh3([u8; 16]),
}

impl BodySum {
    /// The format version whose sealed header holds this kind.
    pub fn version(&self) -> u16 {
        match self {
            BodySum::Sha256(_) => 1,
            BodySum::Xxh3(_) => 2,
        }
    }

    /// The header's bytes 128..160 that hold it.
    pub fn header_bytes(&self) -> [u8; 32] {
        let mut b = [0; 32];
        match self {
            BodySum::Sha256(sum) => b.copy_from_slice(sum),
            BodySum::Xxh3(sum) => b[..16].copy_from_slice(sum),
        }
        b
    }

    /// The checksum of `body` as the format version `version` takes it.
    pub fn of(version: u16, body: &[u8]) -> BodySum {
        let mut h = BodyHasher::new(version);
        h.update(body);
        h.finish()
    }
}

/// Computes a [`BodySum`] over bytes given in pieces.
#[derive(Clone)]
pub struct BodyHasher(Hasher);

#[derive(Clone)]
enum Hasher {
    Sha256(sha2::Sha256),
    Xxh3(Box<xxhash_rust::xxh3::Xxh3Default>),
}

impl BodyHasher {
    /// A hasher for the body checksum of format version `version`
    /// (version 1 takes SHA-256, every later one XXH3-128).
    pub fn new(version: u16) -> BodyHasher {
        use sha2::Digest;
        BodyHasher(if version == 1 {
            Hasher::Sha256(sha2::Sha256::new())
        } else {
            Hasher::Xxh3(Box::new(xxhash_rust::xxh3::Xxh3Default::new()))
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        match &mut self.0 {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Xxh3(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> BodySum {
        use sha2::Digest;
        match self.0 {
            Hasher::Sha256(h) => BodySum::Sha256(h.finalize().into()),
            Hasher::Xxh3(h) => BodySum::Xxh3(h.digest128().to_le_bytes()),
        }
    }
}

impl std::io::Write for BodyHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SealedHeader {
    pub fn start(&self) -> Position {
        Position {
            seq: self.first_seq - 1,
            chain: self.prev_chain,
        }
    }

    pub fn end(&self) -> Position {
        Position {
            seq: self.last_seq,
            chain: self.last_chain,
        }
    }

    pub fn encode(&self) -> [u8; SEALED_HEADER_LEN] {
        let mut b = [0u8; SEALED_HEADER_LEN];
        b[0..8].copy_from_slice(&SEALED_MAGIC);
        b[8..10].copy_from_slice(&self.body_sum.version().to_le_bytes());
        b[10..12].copy_from_slice(&(self.compression as u16).to_le_bytes());
        // 12..16: reserved, zero.
        b[16..32].copy_from_slice(&self.volume_id.0);
        b[32..40].copy_from_slice(&self.first_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.last_seq.to_le_bytes());
        b[48..80].copy_from_slice(&self.prev_chain);
        b[80..112].copy_from_slice(&self.last_chain);
        b[112..120].copy_from_slice(&self.raw_len.to_le_bytes());
        b[120..128].copy_from_slice(&self.body_len.to_le_bytes());
        b[128..160].copy_from_slice(&self.body_sum.header_bytes());
        let crc = crc32c::crc32c(&b[0..160]);
        b[160..164].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SealedHeader, HeaderError> {
        let version = check_prefix(b, SEALED_HEADER_LEN, &SEALED_MAGIC)?;
        if crc32c::crc32c(&b[0..160]) != u32_at(b, 160) {
            return Err(HeaderError::Checksum);
        }
        if b[12..16] != [0; 4] || b[164..168] != [0; 4] {
            return Err(HeaderError::Field("reserved bytes are not zero"));
        }
        let body_sum = match version {
            1 => BodySum::Sha256(b[128..160].try_into().unwrap()),
            _ if b[144..160] != [0; 16] => {
                return Err(HeaderError::Field(
                    "bytes after the body checksum are not zero",
                ))
            }
            _ => BodySum::Xxh3(b[128..144].try_into().unwrap()),
        };
        let compression = match u16::from_le_bytes([b[10], b[11]]) {
            0 => Compression::None,
            1 => Compression::Zstd,
            _ => return Err(HeaderError::Field("unknown compression")),
        };
        let h = SealedHeader {
            volume_id: VolumeId(b[16..32].try_into().unwrap()),
            compression,
            first_seq: u64_at(b, 32),
            last_seq: u64_at(b, 40),
            prev_chain: b[48..80].try_into().unwrap(),
            last_chain: b[80..112].try_into().unwrap(),
            raw_len: u64_at(b, 112),
            body_len: u64_at(b, 120),
            body_sum,
        };
        if h.first_seq == 0 || h.last_seq < h.first_seq || h.last_seq > MAX_SEQ {
            return Err(HeaderError::Field(
                "sequence range is empty, starts at 0 or ends too high",
            ));
        }
        if h.raw_len > MAX_SEGMENT_RAW {
            return Err(HeaderError::Field("raw length too large"));
        }
        if h.compression == Compression::None && h.body_len != h.raw_len {
            return Err(HeaderError::Field(
                "uncompressed body length differs from raw length",
            ));
        }
        Ok(h)
    }
}

/// Checks the length, magic and version of a header; returns the version.
fn check_prefix(b: &[u8], need: usize, magic: &[u8; 8]) -> Result<u16, HeaderError> {
    if b.len() < need {
        return Err(HeaderError::Truncated {
            have: b.len(),
            need,
        });
    }
    if &b[0..8] != magic {
        return Err(HeaderError::BadMagic(b[0..8].try_into().unwrap()));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(version)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&frame_header(payload));
    out.extend_from_slice(payload);
}

/// Makes `frame`, whose first `FRAME_HEADER_LEN` bytes were set aside for
/// the header and whose rest is the payload, a frame: for a payload
/// written in place, without copying it.
pub fn finish_frame(frame: &mut [u8]) {
    let (header, payload) = frame.split_at_mut(FRAME_HEADER_LEN);
    header.copy_from_slice(&frame_header(payload));
}

fn frame_header(payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    assert!(payload.len() <= MAX_RECORD, "record larger than MAX_RECORD");
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let hcrc = crc32c::crc32c(&header[0..8]);
    header[8..12].copy_from_slice(&hcrc.to_le_bytes());
    header
}

/// What lies at one offset of a run of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameStep {
    /// A whole, verified frame: its payload is `buf[payload]`, the next frame starts at `next`.
    Frame {
        payload: std::ops::Range<usize>,
        next: usize,
    },
    /// No bytes left.
    End,
    /// What is left is an interrupted append: it may be cut off here.
    Torn(&'static str),
    /// Damage that an interrupted append cannot explain.
    Corrupt(String),
}

/// Reads the frame at `at`. The rules that tell a torn tail from damage are
/// those of docs/FORMAT.md: an append leaves a prefix of its bytes, possibly
/// followed by zeros, so only the last frame in the buffer can be torn. The
/// header has its own checksum, so a length is trusted only once verified.
pub fn next_frame(buf: &[u8], at: usize) -> FrameStep {
    let rest = &buf[at..];
    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
    if rest.is_empty() {
        return FrameStep::End;
    }
    if zeros(rest) {
        return FrameStep::Torn("zero-filled tail");
    }
    if rest.len() < FRAME_HEADER_LEN {
        return FrameStep::Torn("partial frame header");
    }
    if crc32c::crc32c(&rest[0..8]) != u32_at(rest, 8) {
        if zeros(&rest[FRAME_HEADER_LEN..]) {
            return FrameStep::Torn("frame header cut short");
        }
        return FrameStep::Corrupt("frame header checksum mismatch".into());
    }
    let len = u32_at(rest, 0) as usize;
    if len == 0 || len > MAX_RECORD {
        return FrameStep::Corrupt(format!("frame length {len} out of range"));
    }
    let end = FRAME_HEADER_LEN + len;
    if end > rest.len() {
        return FrameStep::Torn("frame runs past the end");
    }
    if crc32c::crc32c(&rest[FRAME_HEADER_LEN..end]) != u32_at(rest, 4) {
        if zeros(&rest[end..]) {
            return FrameStep::Torn("last frame fails its checksum");
        }
        return FrameStep::Corrupt("frame checksum mismatch".into());
    }
    FrameStep::Frame {
        payload: at + FRAME_HEADER_LEN..at + end,
        next: at + end,
    }
}

/// Why [`read_frame`] found no whole, verified frame.
#[derive(Debug)]
pub enum ReadFrameError {
    /// The bytes stop inside a frame.
    CutShort,
    /// A checksum or the length does not hold.
    Corrupt(String),
    /// The reader failed.
    Io(std::io::Error),
}

/// Reads the next frame from a stream into `frame` (header, then payload,
/// which starts at [`FRAME_HEADER_LEN`]), verifying both checksums. Returns
/// `false` when the stream ends where a frame would start. Unlike
/// [`next_frame`], it tells no torn tail from damage: it is for bodies that
/// are whole or broken (sealed segments, images).
pub fn read_frame(r: &mut impl std::io::Read, frame: &mut Vec<u8>) -> Result<bool, ReadFrameError> {
    frame.resize(FRAME_HEADER_LEN, 0);
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        match r.read(&mut frame[got..FRAME_HEADER_LEN]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ReadFrameError::CutShort),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadFrameError::Io(e)),
        }
    }
    if crc32c::crc32c(&frame[0..8]) != u32_at(frame, 8) {
        return Err(ReadFrameError::Corrupt(
            "frame header checksum mismatch".into(),
        ));
    }
    let len = u32_at(frame, 0) as usize;
    if len == 0 || len > MAX_RECORD {
        return Err(ReadFrameError::Corrupt(format!(
            "frame length {len} out of range"
        )));
    }
    frame.resize(FRAME_HEADER_LEN + len, 0);
    r.read_exact(&mut frame[FRAME_HEADER_LEN..])
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadFrameError::CutShort,
            _ => ReadFrameError::Io(e),
        })?;
    if crc32c::crc32c(&frame[FRAME_HEADER_LEN..]) != u32_at(frame, 4) {
        return Err(ReadFrameError::Corrupt("frame checksum mismatch".into()));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> ActiveHeader {
        ActiveHeader {
            volume_id: VolumeId([7; 16]),
            first_seq: 42,
            prev_chain: [9; 32],
        }
    }

    fn sealed() -> SealedHeader {
        SealedHeader {
            volume_id: VolumeId([1; 16]),
            compression: Compression::Zstd,
            first_seq: 1,
            last_seq: 10,
            prev_chain: [0; 32],
            last_chain: [3; 32],
            raw_len: 1000,
            body_len: 400,
            body_sum: BodySum::Xxh3([5; 16]),
        }
    }

    fn sealed_v1() -> SealedHeader {
        SealedHeader {
            body_sum: BodySum::Sha256([6; 32]),
            ..sealed()
        }
    }

    #[test]
    fn headers_round_trip() {
        assert_eq!(ActiveHeader::decode(&active().encode()).unwrap(), active());
        let s = sealed().encode();
        assert_eq!(u16::from_le_bytes([s[8], s[9]]), FORMAT_VERSION);
        assert_eq!(SealedHeader::decode(&s).unwrap(), sealed());
        // A version 1 header is still read, and written back the same.
        let v1 = sealed_v1().encode();
        assert_eq!(u16::from_le_bytes([v1[8], v1[9]]), 1);
        assert_eq!(SealedHeader::decode(&v1).unwrap(), sealed_v1());
        // An active header of version 1 reads as one of today's.
        let mut a1 = active().encode();
        a1[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&a1[0..72]);
        a1[72..76].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(ActiveHeader::decode(&a1).unwrap(), active());
    }

    #[test]
    fn body_sums_are_the_versions_hashes() {
        use sha2::Digest;
        let body = b"frames of a sealed segment";
        assert_eq!(
            BodySum::of(1, body),
            BodySum::Sha256(sha2::Sha256::digest(body).into())
        );
        // XXH3-128 of the empty input, from the reference implementation.
        assert_eq!(
            BodySum::of(2, b""),
            BodySum::Xxh3(0x99aa06d3014798d86001c324468d497f_u128.to_le_bytes())
        );
        let mut pieces = BodyHasher::new(2);
        for piece in body.chunks(5) {
            pieces.update(piece);
        }
        assert_eq!(pieces.finish(), BodySum::of(2, body));
        assert_ne!(
            BodySum::of(2, body),
            BodySum::of(2, b"frames of a sealed segmenu")
        );
    }

    #[test]
    fn a_version_2_header_keeps_the_bytes_after_its_checksum_zero() {
        let mut b = sealed().encode();
        b[150] = 1;
        let crc = crc32c::crc32c(&b[0..160]);
        b[160..164].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SealedHeader::decode(&b),
            Err(HeaderError::Field(
                "bytes after the body checksum are not zero"
            ))
        );
    }

    #[test]
    fn every_flipped_header_bit_is_refused() {
        let a = active().encode();
        for bit in 0..a.len() * 8 {
            let mut b = a;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(ActiveHeader::decode(&b).is_err(), "active bit {bit}");
        }
        for s in [sealed().encode(), sealed_v1().encode()] {
            for bit in 0..s.len() * 8 {
                let mut b = s;
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(SealedHeader::decode(&b).is_err(), "sealed bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_magic_version_and_truncation() {
        let a = active().encode();
        assert!(matches!(
            SealedHeader::decode(&sealed().encode()[..100]),
            Err(HeaderError::Truncated { .. })
        ));
        assert!(matches!(
            ActiveHeader::decode(&sealed().encode()),
            Err(HeaderError::BadMagic(_))
        ));
        for version in [0, FORMAT_VERSION + 1] {
            let mut b = a;
            b[8..10].copy_from_slice(&version.to_le_bytes());
            assert_eq!(
                ActiveHeader::decode(&b),
                Err(HeaderError::UnsupportedVersion(version))
            );
        }
        for cut in 0..a.len() {
            assert!(ActiveHeader::decode(&a[..cut]).is_err());
        }
    }

    #[test]
    fn frames_and_torn_tails() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        let FrameStep::Frame { payload, next } = next_frame(&buf, 0) else {
            panic!()
        };
        assert_eq!(&buf[payload], b"hello");
        let FrameStep::Frame { payload, next: end } = next_frame(&buf, next) else {
            panic!()
        };
        assert_eq!(&buf[payload], b"world!");
        assert_eq!(next_frame(&buf, end), FrameStep::End);
        // Every cut inside the last frame is a torn tail.
        for cut in next + 1..buf.len() {
            assert!(
                matches!(next_frame(&buf[..cut], next), FrameStep::Torn(_)),
                "cut {cut}"
            );
        }
        // Zeros after a whole frame are a torn tail too.
        let mut zeroed = buf.clone();
        zeroed.extend_from_slice(&[0; 100]);
        assert!(matches!(next_frame(&zeroed, end), FrameStep::Torn(_)));
        // A flipped bit in the first frame, with a good frame after it, is damage.
        let mut flipped = buf.clone();
        flipped[10] ^= 4;
        assert!(matches!(next_frame(&flipped, 0), FrameStep::Corrupt(_)));
        // An impossible length is damage, wherever it is.
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(next_frame(&huge, 0), FrameStep::Corrupt(_)));
        let hcrc = crc32c::crc32c(&huge[0..8]);
        huge[8..12].copy_from_slice(&hcrc.to_le_bytes());
        assert_eq!(
            next_frame(&huge, 0),
            FrameStep::Corrupt(format!("frame length {} out of range", u32::MAX))
        );
        // A flipped length bit in a frame that is not the last is damage, even
        // when the new length runs past the end.
        for bit in 0..32 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(next_frame(&b, 0), FrameStep::Corrupt(_)),
                "length bit {bit}"
            );
        }
    }
}
