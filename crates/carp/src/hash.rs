//! Hash primitives of the three modes.
//!
//! - Squid / CARP draft: the 32-bit rotate-and-add hash of `carp.cc` and of
//!   draft-vinod-carp-v1-03, with the draft's load-factor multipliers.
//! - `hrw`: a 64-bit key hash (xxh3) combined with a per-member seed through a
//!   bijective 64-bit finalizer, turned into a weighted score by the logarithmic
//!   method (`weight / -ln(u)`).

/// The multiplier both CARP variants use in their hash finalization.
const CARP_MIX: u32 = 0x6253_1965;

/// How a CARP hash treats bytes ≥ 0x80.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharSign {
    /// C `char` on x86: bytes ≥ 0x80 sign-extend (what Squid does).
    Signed,
    /// Bytes are 0..=255 (the CARP draft as written).
    Unsigned,
}

#[inline]
fn widen(b: u8, sign: CharSign) -> u32 {
    match sign {
        CharSign::Signed => b as i8 as i32 as u32,
        CharSign::Unsigned => b as u32,
    }
}

/// Accumulates bytes into a CARP URL hash: `h += rotl(h, 19) + c` per byte.
#[inline]
pub fn carp_accumulate(mut h: u32, bytes: &[u8], sign: CharSign) -> u32 {
    for &b in bytes {
        h = h.wrapping_add(h.rotate_left(19).wrapping_add(widen(b, sign)));
    }
    h
}

/// CARP finalization: `h += h * 0x62531965; h = rotl(h, 21)`.
#[inline]
pub fn carp_finalize(h: u32) -> u32 {
    h.wrapping_add(h.wrapping_mul(CARP_MIX)).rotate_left(21)
}

/// A member's CARP hash, computed over its name.
pub fn carp_member_hash(name: &[u8], sign: CharSign) -> u32 {
    carp_finalize(carp_accumulate(0, name, sign))
}

/// Combines a URL hash with a member hash into the member's 32-bit draw.
#[inline]
pub fn carp_combine(url_hash: u32, member_hash: u32) -> u32 {
    carp_finalize(url_hash ^ member_hash)
}

/// Load-factor multipliers of the CARP draft (section 3.3), as Squid computes
/// them: `factors` must be sorted ascending. Returns one multiplier per factor.
///
/// X_1 = (K·p_1)^(1/K); X_k = ((K−k+1)(p_k − p_{k−1}) / ∏X_{<k} + X_{k−1}^(K−k+1))^(1/(K−k+1))
pub fn carp_multipliers(factors: &[f64]) -> Vec<f64> {
    let k_total = factors.len();
    let mut out = Vec::with_capacity(k_total);
    let (mut p_last, mut x_last, mut xn) = (0.0f64, 0.0f64, 1.0f64);
    for (i, &p) in factors.iter().enumerate() {
        let kk1 = (k_total - i) as f64;
        let mut x = (kk1 * (p - p_last)) / xn;
        x += x_last.powf(kk1);
        x = x.powf(1.0 / kk1);
        xn *= x;
        x_last = x;
        p_last = p;
        out.push(x);
    }
    out
}

/// 64-bit key hash of `hrw`.
#[inline]
pub fn hrw_key_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A member's 64-bit seed in `hrw` (domain-separated from key hashes).
pub fn hrw_member_seed(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(name, 0x6361_7270_6f6f_6c31) // "carpool1"
}

/// Bijective 64-bit finalizer (splitmix64's): every input bit affects every output bit.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The member's uniform draw for a key: 64 bits, independent across members.
#[inline]
pub fn hrw_draw(key_hash: u64, seed: u64) -> u64 {
    mix64(key_hash ^ seed)
}

/// Maps a 64-bit draw to u in (0, 1) using its top 52 bits (exactly representable).
#[inline]
pub fn unit_interval(draw: u64) -> f64 {
    ((draw >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// Weighted rendezvous score, logarithmic method: `weight / -ln(u)`.
/// Over uniform draws, member i wins with probability `w_i / Σw` exactly.
#[inline]
pub fn hrw_score(draw: u64, weight: f64) -> f64 {
    weight / -unit_interval(draw).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_chars_differ_from_unsigned_only_for_high_bytes() {
        assert_eq!(
            carp_member_hash(b"parent1", CharSign::Signed),
            carp_member_hash(b"parent1", CharSign::Unsigned)
        );
        assert_ne!(
            carp_member_hash("café".as_bytes(), CharSign::Signed),
            carp_member_hash("café".as_bytes(), CharSign::Unsigned)
        );
    }

    #[test]
    fn multipliers_of_equal_factors_are_one() {
        for m in carp_multipliers(&[0.25; 4]) {
            assert!((m - 1.0).abs() < 1e-12, "{m}");
        }
    }

    #[test]
    fn unit_interval_is_open() {
        assert!(unit_interval(0) > 0.0);
        assert!(unit_interval(u64::MAX) < 1.0);
    }
}
