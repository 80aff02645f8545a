//! Pause points for crash-safety tests: the provider API crate's, so that
//! providers can mark points inside their calls too.

pub use prov_provider::crashpoint::reached;
