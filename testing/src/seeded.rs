//! [`Seeded`]: the kill tests' deterministic generator, so a failing
//! schedule replays from its seed (no test randomness we cannot replay).

/// A xorshift64 generator. The seed must not be 0 (it would stay 0).
#[derive(Clone, Debug)]
pub struct Seeded(pub u64);

impl Seeded {
    /// The next number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
