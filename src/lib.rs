//! prov: a declarative provisioner for NixOS hosts.
//!
//! `spec + state --refresh--> observed --diff--> Plan --apply--> providers`,
//! with state saved after every step. The binary (`main.rs`) is a thin shell
//! over [`run`].

pub mod apply;
pub mod atomic;
pub mod cli;
pub mod cli_env;
pub mod cli_everyday;
pub mod clock;
pub mod command;
pub mod crashpoint;
pub mod deploy;
pub mod duration;
pub mod environments;
pub mod interrupt;
pub mod kube;
pub mod outputs;
pub mod plan;
pub mod providers;
pub mod secrets;
pub mod select;
pub mod session;
pub mod spec;
pub mod ssh;
pub mod tasks;
pub mod ui;

pub use command::run;
