//! `model_training` stage: fits `y = a·x + b` by least squares to a normalized `x,y` CSV and
//! writes the model as `a=…,b=…,mse=…,n=…` (nine decimals). Status 1: fewer than two rows.

#![deny(unsafe_code)]

use sovereign_guest::{csv_pairs, fixed, input, log_line, output};

#[allow(unsafe_code)] // the one export the sandbox ABI requires (a stable symbol name)
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let text = String::from_utf8_lossy(&input()).into_owned();
    let rows = csv_pairs(&text);
    let n = rows.len() as f64;
    if rows.len() < 2 {
        return 1;
    }
    let (sx, sy) = rows.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = rows.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let b = my - a * mx;
    let mse = rows.iter().map(|(x, y)| (y - (a * x + b)).powi(2)).sum::<f64>() / n;
    log_line(&format!("fitted {} rows", rows.len()));
    let model = format!("a={},b={},mse={},n={}", fixed(a, 9), fixed(b, 9), fixed(mse, 9), rows.len());
    if output(model.as_bytes()) { 0 } else { 2 }
}
