//! One room per group of commands.

pub(crate) mod anchor;
pub(crate) mod appliance;
pub(crate) mod audit;
pub(crate) mod cert;
pub(crate) mod gpu;
pub(crate) mod license;
pub(crate) mod offline;
pub(crate) mod policy;
pub(crate) mod update;

/// Prints the appliance's one-line refusal (`REFUSED: …`, or `{"refused": …}` with `--json`)
/// and returns exit code 1.
pub(crate) fn print_refusal(why: &str, json: bool) -> std::process::ExitCode {
    if json {
        println!("{}", serde_json::json!({ "refused": why }));
    } else {
        println!("REFUSED: {why}");
    }
    std::process::ExitCode::from(1)
}
