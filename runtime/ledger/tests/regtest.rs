//! The licence check online, against a real Bitcoin regtest node (bcoin 1.0.2) through a real
//! Electrum server (ElectrumX 1.18.0), both on 127.0.0.1, started here (installed by `cargo xtask
//! setup`; missing, the test fails saying so). A wallet pays the licence — the developer's script
//! and `OP_RETURN SHA256("LICENSE" || machine_id)` — and the check must find it valid only once
//! it has the required confirmations, and invalid with the wrong amount, script or commitment.
//! Every proof the check accepts is the one an air-gapped appliance would import, verified by the
//! same code. A reorganisation that takes the licence's block away makes it stop counting. An
//! audit checkpoint's anchor is funded by the node's wallet from its unfunded PSBT, found
//! through the Electrum server by txid, and verified offline.

#![allow(clippy::unwrap_used)] // test code

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bitcoin::{Amount, Network, ScriptBuf, Txid};
use sovereign_ledger::chain::Checkpoint;
use sovereign_ledger::electrum::{self, FetchError};
use sovereign_ledger::licence::{Terms, commitment};
use sovereign_ledger::proof::ProofError;

const BCOIN: &str = "/var/cache/sovereign/bitcoin/node_modules/bcoin/bin/node";
const ELECTRUMX: &str = "/var/cache/sovereign/venv/bin/electrumx_server";
const API_KEY: &str = "sovereign-regtest";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// bcoin (node and wallet) and ElectrumX, stopped on drop.
struct Regtest {
    node: Child,
    electrumx: Child,
    rpc: u16,
    wallet: u16,
    electrum: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Regtest {
    fn drop(&mut self) {
        for c in [&mut self.electrumx, &mut self.node] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{API_KEY}"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {response}"))
}

impl Regtest {
    fn start() -> Regtest {
        for (path, what) in [(BCOIN, "bcoin"), (ELECTRUMX, "ElectrumX")] {
            assert!(std::path::Path::new(path).exists(), "{what} is not installed at {path}: run `cargo xtask setup`");
        }
        let dir = tempfile::tempdir().unwrap();
        let (rpc, wallet, electrum) = (free_port(), free_port(), free_port());
        let node = Command::new("node")
            .env("NODE_BACKEND", "js")
            .arg(BCOIN)
            .args(["--network=regtest", "--memory=true", "--listen=false", "--workers=false", "--index-tx=true"])
            .arg(format!("--prefix={}", dir.path().join("bcoin").display()))
            .args(["--http-host=127.0.0.1", &format!("--http-port={rpc}"), &format!("--api-key={API_KEY}")])
            .args([&format!("--wallet-http-port={wallet}"), "--wallet-http-host=127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("electrumx")).unwrap();
        let electrumx = Command::new(ELECTRUMX)
            .env("DB_ENGINE", "leveldb")
            .env("COIN", "Bitcoin")
            .env("NET", "regtest")
            .env("DB_DIRECTORY", dir.path().join("electrumx"))
            .env("DAEMON_URL", format!("http://x:{API_KEY}@127.0.0.1:{rpc}/"))
            .env("SERVICES", format!("tcp://127.0.0.1:{electrum}"))
            .env("ALLOW_ROOT", "1")
            .env("PEER_DISCOVERY", "off")
            .env("PEER_ANNOUNCE", "")
            // Milliseconds between polls of the node (defaults 1000 and 5000).
            .env("DAEMON_POLL_INTERVAL_BLOCKS", "200")
            .env("DAEMON_POLL_INTERVAL_MEMPOOL", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Regtest { node, electrumx, rpc, wallet, electrum, _dir: dir };
        r.wait("the Electrum server", || TcpStream::connect(("127.0.0.1", r.electrum)).is_ok());
        r
    }

    fn wait(&self, what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(Instant::now() < deadline, "{what} did not come up within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let body = serde_json::json!({ "method": method, "params": params }).to_string();
        let reply = http(self.rpc, "POST", "/", &body);
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }

    fn height(&self) -> u64 {
        self.rpc("getblockcount", serde_json::json!([])).as_u64().unwrap()
    }

    fn mine(&self, n: u32) -> Vec<String> {
        let account = http(self.wallet, "GET", "/wallet/primary/account/default", "");
        let address = account["receiveAddress"].as_str().unwrap().to_string();
        let hashes = self.rpc("generatetoaddress", serde_json::json!([n, address]));
        hashes.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
    }

    /// The wallet pays `outputs` (value in satoshis, scriptPubKey).
    fn pay(&self, outputs: &[(u64, ScriptBuf)]) -> Txid {
        let outputs: Vec<serde_json::Value> = outputs
            .iter()
            .map(|(value, script)| serde_json::json!({ "value": value, "script": hex::encode(script.as_bytes()) }))
            .collect();
        let body = serde_json::json!({ "outputs": outputs }).to_string();
        // The wallet catches up with mined blocks on its own time: until it has, its matured
        // coins are not yet spendable (a FundingError); anything else is a failure.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = http(self.wallet, "POST", "/wallet/primary/send", &body);
            if let Some(hash) = sent["hash"].as_str() {
                return hash.parse().unwrap();
            }
            assert!(sent["error"]["type"] == "FundingError" && Instant::now() < deadline, "send: {sent}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the Electrum server has indexed the node's tip.
    fn synced(&self) {
        let height = self.height();
        self.wait("ElectrumX catching up", || {
            electrum::connect(&self.url(), Duration::from_secs(5))
                .ok()
                .and_then(|c| bdk_electrum::electrum_client::ElectrumApi::block_headers_subscribe(&c).ok())
                .is_some_and(|tip| tip.height as u64 == height)
        });
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.electrum)
    }
}

fn op_return(data: &[u8; 32]) -> ScriptBuf {
    let mut bytes = vec![0x6a, 0x20];
    bytes.extend_from_slice(data);
    ScriptBuf::from_bytes(bytes)
}

fn p2wpkh(byte: u8) -> ScriptBuf {
    let mut bytes = vec![0x00, 0x14];
    bytes.extend_from_slice(&[byte; 20]);
    ScriptBuf::from_bytes(bytes)
}

#[test]
fn a_licence_counts_only_paid_in_full_to_the_developer_for_this_machine_and_buried_deep_enough() {
    let chain = Regtest::start();
    chain.mine(110);
    let terms = Terms { script: p2wpkh(0xd3), amount: Amount::from_sat(50_000) };
    let checkpoint = Checkpoint { height: 0, header: bitcoin::constants::genesis_block(Network::Regtest).header };
    let check = |machine: &[u8], depth: u32| {
        let client = electrum::connect(&chain.url(), Duration::from_secs(10)).unwrap();
        electrum::check(&client, Network::Regtest, &checkpoint, &terms, machine, depth)
    };

    let machine = b"node identity of appliance 1 (its TPM-bound key)".as_slice();
    let paid = chain.pay(&[(50_000, terms.script.clone()), (0, op_return(&commitment(machine)))]);
    chain.synced();
    // In the mempool (once the server has seen it there): no licence yet.
    chain.wait(
        "ElectrumX seeing the payment in the mempool",
        || matches!(check(machine, 1), Err(FetchError::NoLicence(m)) if m.contains("1 unconfirmed")),
    );

    // One block: found, but not deep enough for three confirmations.
    let mined_at = chain.height() as u32 + 1;
    chain.mine(1);
    chain.synced();
    assert_eq!(
        check(machine, 3).unwrap_err(),
        FetchError::Proof(ProofError::TooShallow { confirmations: 1, needed: 3 })
    );
    chain.mine(2);
    chain.synced();
    let (licence, proof) = check(machine, 3).unwrap();
    assert_eq!((licence.txid, licence.height, licence.confirmations), (paid, mined_at, 3));
    // The proof is what an air-gapped appliance imports: it verifies offline, for this machine only.
    let bytes = serde_json::to_vec(&proof).unwrap();
    let offline = sovereign_ledger::proof::verify(&bytes, Network::Regtest, &checkpoint, &terms, machine, 3).unwrap();
    assert_eq!(offline, licence);
    assert!(
        sovereign_ledger::proof::verify(&bytes, Network::Regtest, &checkpoint, &terms, b"another machine", 3).is_err()
    );

    // Too little, another script, another machine's commitment: none is a licence.
    let short = b"appliance 2".as_slice();
    chain.pay(&[(49_999, terms.script.clone()), (0, op_return(&commitment(short)))]);
    let elsewhere = b"appliance 3".as_slice();
    let elsewhere_tx = chain.pay(&[(50_000, p2wpkh(0x11)), (0, op_return(&commitment(elsewhere)))]);
    let wrong_hash = b"appliance 4".as_slice();
    chain.pay(&[(50_000, terms.script.clone()), (0, op_return(&commitment(b"appliance 5")))]);
    chain.mine(3);
    chain.synced();
    let why = check(short, 1).unwrap_err().to_string();
    assert!(why.contains("the developer's script is paid 0.00049999 BTC, the licence needs 0.00050000 BTC"), "{why}");
    // Paid to another script: not even in the developer script's history.
    let why = check(elsewhere, 1).unwrap_err();
    assert!(matches!(&why, FetchError::NoLicence(m) if !m.contains(&elsewhere_tx.to_string())), "{why}");
    let why = check(wrong_hash, 1).unwrap_err().to_string();
    assert!(why.contains("no OP_RETURN output carries"), "{why}");
    assert!(check(machine, 3).is_ok(), "the genuine licence stopped counting");

    // A reorganisation takes the licence's block away: the node invalidates it (its mempool is
    // reset, so the payment is in no block of the new chain) and mines a longer chain without
    // it. The Electrum server follows the reorganisation, and the licence no longer counts —
    // though the proof file taken before it still verifies offline on its own (an air-gapped
    // appliance cannot know of a reorganisation: the confirmation depth is its margin).
    let licence_block = chain.rpc("getblockhash", serde_json::json!([mined_at]));
    let tip_before = chain.height();
    chain.rpc("invalidateblock", serde_json::json!([licence_block]));
    assert_eq!(chain.height(), u64::from(mined_at) - 1, "the licence's block was not taken away");
    chain.mine((tip_before - u64::from(mined_at) + 2) as u32);
    assert!(chain.height() > tip_before, "the new chain is not longer than the old one");
    chain.synced();
    chain.wait("the Electrum server following the reorganisation", || check(machine, 3).is_err());
    match check(machine, 3) {
        // Every payment to the developer's script was in the blocks taken away.
        Err(FetchError::NoLicence(why)) => assert!(why.starts_with("0 confirmed"), "{why}"),
        other => panic!("after the reorganisation the licence still counts: {other:?}"),
    }
    assert!(
        sovereign_ledger::proof::verify(&bytes, Network::Regtest, &checkpoint, &terms, machine, 3).is_ok(),
        "the proof taken before the reorganisation is self-consistent"
    );
}

/// A server that is not there, or answers nothing, is a named failure within the timeout.
#[test]
fn an_unreachable_or_silent_server_fails_by_name_in_time() {
    let port = free_port();
    let why = electrum::connect(&format!("tcp://127.0.0.1:{port}"), Duration::from_secs(2)).err().unwrap();
    assert!(why.to_string().starts_with("electrum server: "), "{why}");
    // A listener that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let terms = Terms { script: p2wpkh(1), amount: Amount::from_sat(1) };
    let why = electrum::connect(&format!("tcp://{addr}"), Duration::from_secs(2))
        .and_then(|client| electrum::fetch_licence_proof(&client, Network::Regtest, 0, &terms, b"m"))
        .unwrap_err();
    assert!(matches!(why, FetchError::Server(_)), "{why}");
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout did not hold");
    drop(silent);
}

/// An audit checkpoint anchored end to end: the unfunded PSBT for its commitment, funded and
/// broadcast by the node's wallet as an external wallet would (its inputs and change added, the
/// anchor output kept), mined; the anchor is found through the Electrum server by its txid
/// alone (the block through its change output's history), verified offline for that
/// checkpoint only, and only once deep enough.
#[test]
fn an_anchored_checkpoint_is_found_through_electrum_and_verifies_offline() {
    use sovereign_ledger::anchor;
    let chain = Regtest::start();
    chain.mine(110);
    let checkpoint = Checkpoint { height: 0, header: bitcoin::constants::genesis_block(Network::Regtest).header };
    let body = "sovereign-appliance/0123456789abcdef\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n";
    let psbt = anchor::psbt(&anchor::commitment(body)).unwrap();
    let unsigned =
        bitcoin::psbt::Psbt::deserialize(&base64::engine::general_purpose::STANDARD.decode(psbt).unwrap()).unwrap();
    let outputs: Vec<(u64, ScriptBuf)> =
        unsigned.unsigned_tx.output.iter().map(|o| (o.value.to_sat(), o.script_pubkey.clone())).collect();
    let anchored_tx = chain.pay(&outputs);
    let client = || electrum::connect(&chain.url(), Duration::from_secs(10)).unwrap();
    let check =
        |depth: u32| electrum::check_anchor(&client(), Network::Regtest, &checkpoint, body, &anchored_tx, None, depth);
    chain.synced();
    chain.wait(
        "ElectrumX seeing the anchor in the mempool",
        || matches!(check(1), Err(FetchError::NotConfirmed(m)) if m.contains("mempool")),
    );
    let mined_at = chain.height() as u32 + 1;
    chain.mine(1);
    chain.synced();
    assert_eq!(check(2).unwrap_err(), FetchError::Proof(ProofError::TooShallow { confirmations: 1, needed: 2 }));
    chain.mine(1);
    chain.synced();
    let (found, file) = check(2).unwrap();
    assert_eq!((found.txid, found.height, found.confirmations), (anchored_tx, mined_at, 2));

    // Offline, as an auditor checks it: the file verifies for its own checkpoint; the same
    // proof under another checkpoint's body does not.
    let bytes = serde_json::to_vec(&file).unwrap();
    let (offline, anchored_body) = anchor::verify_file(&bytes, Network::Regtest, &checkpoint, 2).unwrap();
    assert_eq!((offline, anchored_body.as_str()), (found.clone(), body));
    let other = anchor::AnchorFile { checkpoint: body.replace("\n42\n", "\n43\n"), proof: file.proof.clone() };
    let why = anchor::verify_file(&serde_json::to_vec(&other).unwrap(), Network::Regtest, &checkpoint, 2)
        .unwrap_err()
        .to_string();
    assert!(why.contains("carries no OP_RETURN with this checkpoint's commitment"), "{why}");
    assert!(anchor::verify_file(&bytes, Network::Regtest, &checkpoint, 3).is_err(), "3 confirmations were not there");
    // With the height given, found the same; a height it is not at, refused by the server's
    // own answer; a transaction the server does not have, named.
    let given = electrum::check_anchor(&client(), Network::Regtest, &checkpoint, body, &anchored_tx, Some(mined_at), 2);
    assert_eq!(given.map(|(a, _)| a), Ok(found));
    let wrong_height =
        electrum::check_anchor(&client(), Network::Regtest, &checkpoint, body, &anchored_tx, Some(mined_at - 1), 1);
    assert!(wrong_height.is_err(), "a proof at the wrong height verified");
    let unknown: Txid = "11".repeat(32).parse().unwrap();
    let why = electrum::check_anchor(&client(), Network::Regtest, &checkpoint, body, &unknown, None, 1).unwrap_err();
    assert!(matches!(why, FetchError::Server(_)), "{why}");
}
