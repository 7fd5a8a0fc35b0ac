//! Sans-IO codecs for everything that arrives from outside. No I/O, no clock, no panics on any
//! input: every parser returns an error for bytes it does not accept.

pub mod arp;
pub mod http;
pub mod ipv4;
pub mod ndisc;
pub mod penctl;
pub mod proxy;
pub mod vrrp;
