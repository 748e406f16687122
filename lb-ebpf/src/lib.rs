//! Library target so that `lb-user` can name this crate as a build dependency
//! (cargo then rebuilds the agent when the data plane changes).
#![no_std]
