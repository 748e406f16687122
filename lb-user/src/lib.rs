//! The `lb` agent and CLI as a library, so that tests and benchmarks fill the
//! data plane through the same code as the agent.
pub mod adm;
pub mod agent;
pub mod api;
pub mod changes;
pub mod config;
pub mod dataplane;
pub mod decap;
pub mod desired;
pub mod genhash;
pub mod health;
pub mod list;
pub mod lvscf;
pub mod neigh;
pub mod reconciler;
pub mod runtime;
pub mod sched;
pub mod state;
pub mod sweep;
pub mod track;
pub mod util;
pub mod vrrp;
