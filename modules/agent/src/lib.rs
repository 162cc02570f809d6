//! `agent_chain` stage: one reviewing agent. Input: a model line (`a=…,b=…,mse=…,n=…`) and, on
//! a second line, this agent's policy `max_mse=…,min_rows=…`. Output: `approve` or `reject`
//! followed by the reason. Several agents with different policies vote on a promotion.

#![deny(unsafe_code)]

use sovereign_guest::{input, log_line, output};

fn field(line: &str, key: &str) -> Option<f64> {
    line.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

#[allow(unsafe_code)] // the one export the sandbox ABI requires (a stable symbol name)
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let text = String::from_utf8_lossy(&input()).into_owned();
    let mut lines = text.lines();
    let (Some(model), Some(policy)) = (lines.next(), lines.next()) else { return 1 };
    let (Some(mse), Some(n)) = (field(model, "mse"), field(model, "n")) else { return 1 };
    let (Some(max_mse), Some(min_rows)) = (field(policy, "max_mse"), field(policy, "min_rows")) else { return 1 };
    let verdict = if mse > max_mse {
        format!("reject: mse {mse} above {max_mse}")
    } else if n < min_rows {
        format!("reject: {n} rows, fewer than {min_rows}")
    } else {
        format!("approve: mse {mse} within {max_mse} on {n} rows")
    };
    log_line(&verdict);
    if output(verdict.as_bytes()) { 0 } else { 2 }
}
