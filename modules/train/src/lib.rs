//! `model_training` stage: fits a line by least squares to a normalized `x,y` CSV and writes the
//! model as `a=…,b=…,mse=…,n=…` (nine decimals). The engine puts the stage's `parameters` first,
//! as one line `#parameters <canonical JSON>`: `"model": "linear"` (the default) fits
//! `y = a·x + b`; `"model": "proportional"` fits `y = a·x` (b = 0). Status 1: fewer than two
//! rows; status 3: a model this module does not know.

#![deny(unsafe_code)]

use sovereign_guest::{csv_pairs, fixed, input, log_line, output};

/// The `model` parameter from the `#parameters` line (canonical JSON: no spaces), if any.
fn model_parameter(text: &str) -> Option<&str> {
    let params = text.lines().next()?.strip_prefix("#parameters ")?;
    let rest = &params[params.find("\"model\":\"")? + "\"model\":\"".len()..];
    rest.split('"').next()
}

#[allow(unsafe_code)] // the one export the sandbox ABI requires (a stable symbol name)
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let text = String::from_utf8_lossy(&input()).into_owned();
    let through_origin = match model_parameter(&text).unwrap_or("linear") {
        "linear" => false,
        "proportional" => true,
        _ => return 3,
    };
    let rows = csv_pairs(&text);
    let n = rows.len() as f64;
    if rows.len() < 2 {
        return 1;
    }
    let (a, b) = if through_origin {
        let (sxy, sxx) = rows.iter().fold((0.0, 0.0), |(p, q), (x, y)| (p + x * y, q + x * x));
        (if sxx > 0.0 { sxy / sxx } else { 0.0 }, 0.0)
    } else {
        let (sx, sy) = rows.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (sxy, sxx) =
            rows.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
        let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        (a, my - a * mx)
    };
    let mse = rows.iter().map(|(x, y)| (y - (a * x + b)).powi(2)).sum::<f64>() / n;
    log_line(&format!("fitted {} rows", rows.len()));
    let model = format!("a={},b={},mse={},n={}", fixed(a, 9), fixed(b, 9), fixed(mse, 9), rows.len());
    if output(model.as_bytes()) { 0 } else { 2 }
}
