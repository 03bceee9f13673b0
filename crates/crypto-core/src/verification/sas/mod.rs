//! `m.sas.v1`: short authentication string verification. `methods`: what is
//! offered and how a choice is made; `crypto`: the commitment, the HKDF
//! info strings and the MACs; `short_strings`: emoji and numbers from the
//! HKDF bytes; `machine`: the exchange as a state machine.

mod crypto;
mod machine;
mod methods;
pub mod short_strings;

pub use crypto::Party;
pub use machine::{Outgoing, SAS_TIMEOUT, SasKeys, SasState, SasVerification};
pub use methods::{Agreed, MacMethod, SasMethod};

#[cfg(test)]
mod tests;
