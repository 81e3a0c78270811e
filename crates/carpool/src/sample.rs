//! A synthetic sample of URLs shaped like real traffic (many hosts and
//! paths, some queries), for `carpool plan` and for the share of URLs the
//! frontend expects each parent to get from its table.

use carp::{RequestUri, Table};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A random URL shaped like real traffic.
pub fn random_url(rng: &mut impl Rng) -> RequestUri {
    let host = format!(
        "www{}.site{}.example",
        rng.gen_range(0..4),
        rng.gen_range(0..5000)
    );
    let mut path = format!(
        "/{}/{:x}",
        ["img", "css", "js", "video", "api"][rng.gen_range(0..5)],
        rng.gen::<u64>()
    );
    if rng.gen_bool(0.3) {
        path.push_str(&format!("?v={}", rng.gen::<u32>()));
    }
    RequestUri::from_parts("http", &host, 80, 80, &path)
}

/// The share of URLs each member of `table` owns when all are alive, over
/// `samples` generated URLs (seed 1, as `carpool plan`'s default sample).
pub fn expected_shares(table: &Table, samples: u32) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut counts = vec![0u64; table.len()];
    for _ in 0..samples {
        if let Some(m) = table.select(&random_url(&mut rng), |_| true) {
            counts[m.index()] += 1;
        }
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&c| c as f64 / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use carp::{Member, Mode};

    #[test]
    fn shares_follow_the_weights_in_hrw() {
        let t = Table::new(
            Mode::Hrw,
            vec![
                Member::new("a", 1),
                Member::new("b", 1),
                Member::new("c", 2),
            ],
        )
        .unwrap();
        let s = expected_shares(&t, 40_000);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for (got, want) in s.iter().zip([0.25, 0.25, 0.5]) {
            assert!((got - want).abs() < 0.02, "{s:?}");
        }
    }
}
