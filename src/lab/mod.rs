//! The lab: mock backends now; the whole-pair lab of network namespaces later.

pub mod echo;
