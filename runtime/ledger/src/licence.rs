//! The licence rule (seed 001): a licence is valid when a confirmed transaction pays at least
//! the required amount to the developer's script **and** carries an output
//! `OP_RETURN SHA256("LICENSE" || machine_id)`.

use bitcoin::blockdata::opcodes::all::OP_RETURN;
use bitcoin::blockdata::script::Instruction;
use bitcoin::{Amount, ScriptBuf, Transaction};
use sha2::{Digest as _, Sha256};

/// What a licence must pay and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The developer's scriptPubKey.
    pub script: ScriptBuf,
    /// The least it must be paid.
    pub amount: Amount,
}

/// Why a transaction is not a licence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenceError {
    /// No output pays the developer's script.
    #[error("no output pays the developer's script")]
    NoPayment,
    /// Outputs pay the script, but less than required.
    #[error("the developer's script is paid {paid}, the licence needs {needed}")]
    TooLittle {
        /// The largest single payment found.
        paid: Amount,
        /// The terms' amount.
        needed: Amount,
    },
    /// No OP_RETURN output commits to this machine.
    #[error("no OP_RETURN output carries SHA256(\"LICENSE\" || machine_id) for this machine")]
    NotThisMachine,
}

/// `SHA256("LICENSE" || machine_id)`: what the licence's OP_RETURN carries.
pub fn commitment(machine_id: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"LICENSE");
    h.update(machine_id);
    h.finalize().into()
}

/// Whether `script` is `OP_RETURN <exactly these 32 bytes>`.
pub(crate) fn commits_to(script: &bitcoin::Script, expected: &[u8; 32]) -> bool {
    let mut instructions = script.instructions();
    matches!(instructions.next(), Some(Ok(Instruction::Op(op))) if op == OP_RETURN)
        && matches!(instructions.next(), Some(Ok(Instruction::PushBytes(data))) if data.as_bytes() == expected)
        && instructions.next().is_none()
}

/// Checks the rule on one transaction (its confirmation is the chain's business).
pub fn check(tx: &Transaction, terms: &Terms, machine_id: &[u8]) -> Result<(), LicenceError> {
    let paid = tx.output.iter().filter(|o| o.script_pubkey == terms.script).map(|o| o.value).max();
    match paid {
        None => return Err(LicenceError::NoPayment),
        Some(paid) if paid < terms.amount => return Err(LicenceError::TooLittle { paid, needed: terms.amount }),
        Some(_) => {}
    }
    let expected = commitment(machine_id);
    if !tx.output.iter().any(|o| commits_to(&o.script_pubkey, &expected)) {
        return Err(LicenceError::NotThisMachine);
    }
    Ok(())
}
