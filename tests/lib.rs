//! The integration suite: one test binary that runs the built `prov` against
//! real peers (moto for EC2), each test in its own temporary directory.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod cache;
mod cli;
mod crash;
mod deploy;
mod ec2;
mod environments;
mod everyday;
mod fresh_check;
mod kubernetes;
mod libvirt;
mod locking;
mod moved;
mod plan_output;
mod remote;
mod rollback;
mod s3_state;
mod secrets;
mod spec_errors;
mod virtualbox;
