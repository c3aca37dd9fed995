//! Helpers shared by the integration tests of libjfs.
#![allow(dead_code)]

/// Bytes that do not compress (xorshift), the same sequence on every run.
pub struct Noise(u64);

impl Noise {
    pub fn new() -> Noise {
        Noise(0x9e37_79b9_7f4a_7c15)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}
