//! Order statistics of a bench's samples.

/// The `q` quantile (0 to 1) of `values`, linearly interpolated between
/// the two nearest ranks; NaN when `values` is empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Median, first and third quartile, minimum and maximum of `values`.
pub fn summary(values: &[f64]) -> [f64; 5] {
    [0.5, 0.25, 0.75, 0.0, 1.0].map(|q| quantile(values, q))
}
