//! fwlb: a redundant firewall + TCP load-balancer pair in one supervised binary.
//! See the design notes (architecture.md) for the process model and layers.
//!
//! `unsafe` is denied everywhere but in `sys`, the syscall wrappers, where each block carries
//! a `// SAFETY:` line.

#![deny(unsafe_code)]

pub mod balancer;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod firewall;
pub mod health;
pub mod lab;
pub mod logging;
pub mod privsep;
pub mod resolver;
pub mod sync;
#[allow(unsafe_code)]
pub mod sys;
pub mod trace;
pub mod vrrp;
pub mod wire;
