//! Positions in the journal: a sequence number and the chain hash after it.
//!
//! `chain(n) = SHA-256(chain(n-1) || bytes of record n)`, with `chain(0)` all
//! zeros. Two nodes at the same `seq` with different chains have diverged.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 chain value.
pub type Chain = [u8; 32];

/// A point in the journal: after record `seq`, whose chain value is `chain`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub seq: u64,
    pub chain: Chain,
}

impl Position {
    /// Before the first record.
    pub const ZERO: Position = Position {
        seq: 0,
        chain: [0; 32],
    };

    /// The position after appending a record whose encoding is `record`.
    pub fn next(&self, record: &[u8]) -> Position {
        let mut h = Sha256::new();
        h.update(self.chain);
        h.update(record);
        Position {
            seq: self.seq + 1,
            chain: h.finalize().into(),
        }
    }

    pub fn chain_hex(&self) -> String {
        hex::encode(self.chain)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, &self.chain_hex()[..16])
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({}, {})", self.seq, self.chain_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_byte_and_on_history() {
        let a = Position::ZERO.next(b"one");
        assert_eq!(a.seq, 1);
        assert_ne!(a.chain, Position::ZERO.next(b"onf").chain);
        let b1 = a.next(b"two");
        let b2 = Position::ZERO.next(b"other").next(b"two");
        assert_eq!(b1.seq, b2.seq);
        assert_ne!(
            b1.chain, b2.chain,
            "same record after a different history must differ"
        );
        assert_eq!(b1, a.next(b"two"));
    }
}
