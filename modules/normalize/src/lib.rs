//! `data_preparation` stage: reads a CSV of `x,y` rows (a header line is skipped), drops rows
//! that do not parse, min-max normalizes `x` to [0, 1], and writes `x,y` rows with six decimals.
//! Status 1: no usable rows.

#![deny(unsafe_code)]

use sovereign_guest::{csv_pairs, fixed, input, log_line, output};

#[allow(unsafe_code)] // the one export the sandbox ABI requires (a stable symbol name)
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let text = String::from_utf8_lossy(&input()).into_owned();
    let rows: Vec<(f64, f64)> = csv_pairs(&text).into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if rows.is_empty() {
        return 1;
    }
    let (lo, hi) = rows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| (lo.min(*x), hi.max(*x)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut out = String::from("x,y\n");
    for (x, y) in &rows {
        out.push_str(&format!("{},{}\n", fixed((x - lo) / span, 6), fixed(*y, 6)));
    }
    log_line(&format!("normalized {} rows (x in [{lo}, {hi}])", rows.len()));
    if output(out.as_bytes()) { 0 } else { 2 }
}
