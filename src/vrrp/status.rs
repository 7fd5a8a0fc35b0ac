//! What `show vrrp` reports: written by the speaker, read by the control port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What `show vrrp` reports, shared with the control port.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InstanceStatus {
    pub vrid: u8,
    pub interface: String,
    pub state: String,
    pub priority: u8,
    pub effective_priority: u8,
    pub master: Option<String>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Packets dropped, by reason.
    pub dropped: HashMap<String, u64>,
}

pub type Status = Arc<Mutex<Vec<InstanceStatus>>>;
