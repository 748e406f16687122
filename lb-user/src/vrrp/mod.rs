//! VRRP (issue 6, in progress): the wire format and the state machine of an
//! instance, both pure and unit-tested. Not yet wired into `lb run`: the
//! sockets, virtual address handling, GARP, scripts and configuration are
//! the next steps (see README, *Limits*).

pub mod machine;
pub mod packet;
