//! What usage is counted in, apart from where it is stored: per (minute,
//! key, route) a [`Counts`] of requests by outcome and a latency histogram
//! with fixed buckets, from which percentiles are read back to the bucket.
//! The proxy counts into it, the database layer (`db::usage`) stores and
//! sums it, the admin API reports from it.

/// Upper bounds (inclusive, microseconds) of the latency buckets
/// `usage_minute.lat_b0 ..= lat_b10`; `lat_b11` counts everything slower.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 11] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];
/// Number of latency bucket columns (`lat_b0` … `lat_b11`).
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// The histogram bucket (`lat_b<i>`) a latency falls in.
pub fn latency_bucket(latency_us: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < latency_us)
}

/// What is counted per (minute, key, route).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub allowed: i64,
    pub limited: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub upstream_errors: i64,
    pub latency_sum_us: i64,
    /// Requests per latency bucket (`lat_b0..lat_b11`).
    pub latency_buckets: [i64; LATENCY_BUCKETS],
}

impl Counts {
    /// Every request counted (the five outcome columns are disjoint).
    pub fn total(&self) -> i64 {
        self.allowed + self.limited + self.unauthorized + self.forbidden + self.upstream_errors
    }

    /// Requests the gateway refused (429, 401, 403).
    pub fn refused(&self) -> i64 {
        self.limited + self.unauthorized + self.forbidden
    }

    pub fn add(&mut self, other: &Counts) {
        self.allowed += other.allowed;
        self.limited += other.limited;
        self.unauthorized += other.unauthorized;
        self.forbidden += other.forbidden;
        self.upstream_errors += other.upstream_errors;
        self.latency_sum_us += other.latency_sum_us;
        for (a, b) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *a += b;
        }
    }

    /// Mean latency in milliseconds, `None` without requests.
    pub fn avg_latency_ms(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| self.latency_sum_us as f64 / n as f64 / 1000.0)
    }

    /// The histogram bucket holding quantile `q` (0 < q ≤ 1): the first
    /// bucket whose cumulative count reaches `ceil(q × n)`. `None` without
    /// requests.
    pub fn percentile_bucket(&self, q: f64) -> Option<usize> {
        let n: i64 = self.latency_buckets.iter().sum();
        if n <= 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (i, c) in self.latency_buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i);
            }
        }
        Some(LATENCY_BUCKETS - 1)
    }

    /// Quantile `q` in milliseconds, to the bucket: the upper bound of the
    /// bucket holding it; for the open-ended last bucket its lower bound
    /// (the slowest bound, 1000 ms). `None` without requests.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        self.percentile_bucket(q).map(bucket_bound_ms)
    }
}

/// The upper bound in ms of bucket `i`; the lower bound for the last, open one.
pub fn bucket_bound_ms(i: usize) -> f64 {
    let last = LATENCY_BUCKET_BOUNDS_US[LATENCY_BUCKET_BOUNDS_US.len() - 1];
    LATENCY_BUCKET_BOUNDS_US.get(i).copied().unwrap_or(last) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_buckets(buckets: &[(usize, i64)]) -> Counts {
        let mut c = Counts::default();
        for &(i, n) in buckets {
            c.latency_buckets[i] = n;
            c.allowed += n;
        }
        c
    }

    #[test]
    fn latencies_fall_in_inclusive_buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(500), 0);
        assert_eq!(latency_bucket(501), 1);
        assert_eq!(latency_bucket(1_000), 1);
        assert_eq!(latency_bucket(1_000_000), 10);
        assert_eq!(latency_bucket(1_000_001), 11);
        assert_eq!(latency_bucket(u64::MAX), 11);
    }

    #[test]
    fn percentiles_are_read_to_the_bucket() {
        assert_eq!(Counts::default().percentile_ms(0.5), None);
        // 50 fast (≤ 0.5 ms), 45 at ≤ 5 ms, 4 at ≤ 100 ms, 1 slower than 1 s.
        let c = with_buckets(&[(0, 50), (3, 45), (7, 4), (11, 1)]);
        assert_eq!(c.percentile_ms(0.5), Some(0.5));
        assert_eq!(c.percentile_ms(0.51), Some(5.0));
        assert_eq!(c.percentile_ms(0.95), Some(5.0));
        assert_eq!(c.percentile_ms(0.96), Some(100.0));
        assert_eq!(c.percentile_ms(0.99), Some(100.0));
        assert_eq!(c.percentile_ms(1.0), Some(1000.0));
        assert_eq!(c.percentile_bucket(1.0), Some(11));
    }
}
