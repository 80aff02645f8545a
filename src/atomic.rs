//! Atomic file writes: the state crate's (one implementation for the state
//! directory, plan files, secrets and evaluated specs).

pub use prov_state::write_atomic;
