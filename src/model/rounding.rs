//! Rounding of f32 values to integers in plain arithmetic, for loops that the
//! compiler must vectorise.
//!
//! `f32::round` is a call into the C library on x86_64 builds without SSE4.1,
//! the baseline edgedet is built for. A cast `as i32` saturates lane by lane in
//! scalar code. Adding 1.5 · 2^23 instead leaves a sum whose last mantissa bit
//! is worth 1, so the addition itself rounds, halves to even, and the integer
//! sits in the low bits of the sum.

/// 1.5 · 2^23: added to any |x| ≤ 2^22, it rounds x to an integer.
const ROUNDER: f32 = 12_582_912.0;

/// Rounds `x` to the nearest integer, halves to even, as an f32.
/// Exact for |x| ≤ 2^22, so callers clamp larger values first.
#[inline(always)]
pub fn round_ties_even(x: f32) -> f32 {
    (x + ROUNDER) - ROUNDER
}

/// Rounds `x` to the nearest integer, halves to even, as an i32.
/// Exact for |x| ≤ 2^22, so callers clamp larger values first.
#[inline(always)]
pub fn round_to_i32(x: f32) -> i32 {
    ((x + ROUNDER).to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_like_the_library() {
        let values = (-2_000_000..2_000_000).map(|i| i as f32 * 0.25).chain([4_194_303.5, -4_194_303.5, 0.49999997]);
        for x in values {
            assert_eq!(round_ties_even(x), x.round_ties_even(), "{x}");
            assert_eq!(round_to_i32(x), x.round_ties_even() as i32, "{x}");
        }
    }
}
