//! Sans-IO codecs for everything that arrives from outside. No I/O, no clock, no panics on any
//! input: every parser returns an error for bytes it does not accept.

pub mod http;
pub mod penctl;
pub mod proxy;
