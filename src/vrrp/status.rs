//! What `show vrrp` reports: written by the speaker, read by the control port.

use super::fsm::State;
use std::collections::HashMap;

/// What `show vrrp` reports, shared with the control port.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstanceStatus {
    pub vrid: u8,
    pub interface: String,
    pub state: State,
    /// Configured.
    pub priority: u8,
    /// Advertised and compared with: the tracked priority, or 0 (standby, group hold).
    pub effective_priority: u8,
    /// The configured priority moved by `track`.
    pub tracked_priority: u8,
    pub track: Vec<super::track::TrackStatus>,
    /// What moves the effective priority from the configured one, e.g.
    /// `www: no healthy server -60`; empty when nothing does.
    pub why: Vec<String>,
    pub master: Option<String>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Packets dropped, by reason.
    pub dropped: HashMap<String, u64>,
    /// Put on standby by `vrrp standby` (effective priority 0 until `vrrp resume`).
    pub standby: bool,
    /// The virtual addresses, `ADDR/PREFIX`.
    pub addresses: Vec<String>,
    /// The configured advertisement interval.
    pub advert_interval_ms: u64,
}

/// The speaker's latest snapshot: it sends a new one when something changed, readers borrow
/// it (`show vrrp`) or await a condition on it (`wait_for`, the hand-over at stop).
pub type Status = tokio::sync::watch::Receiver<Vec<InstanceStatus>>;

/// What an operator asks of the speaker through the control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// Hand mastership over on purpose: VRID, or every instance (None).
    Standby(Option<u8>),
    /// Undo Standby.
    Resume(Option<u8>),
}

/// The speaker's end receives them in order; sending never blocks the control port.
pub type OperatorTx = tokio::sync::mpsc::UnboundedSender<Operator>;
