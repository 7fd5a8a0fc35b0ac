//! Two simulated hosts.
