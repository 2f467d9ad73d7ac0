//! This worker among the live ones, which split each webhook's rate limit between them.

/// This worker among the live ones: how many there are, and its place in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub live: usize,
    pub rank: usize,
}

impl Membership {
    /// Alone, as a worker is before its first beat.
    pub const ALONE: Self = Self { live: 1, rank: 0 };
}
