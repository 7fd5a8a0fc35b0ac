//! The lab: mock backends (`fwlb echo`), and `fwlb lab`, a whole pair in network namespaces
//! on one machine with failover drills (Linux).

#[cfg(target_os = "linux")]
pub mod drill;
pub mod echo;
#[cfg(target_os = "linux")]
pub mod interrupt;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod pair;
#[cfg(target_os = "linux")]
pub mod probe;
#[cfg(target_os = "linux")]
pub mod report;
#[cfg(target_os = "linux")]
pub mod run;
pub mod topo;
