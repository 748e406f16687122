//! VRRP (RFC 3768 v2, RFC 5798 v3) interchangeable with keepalived's: the
//! wire format, the state machine of an instance, sockets, virtual
//! addresses, gratuitous ARP / NA, tracking, notifications and the engine
//! task that runs them in `lb run`.

pub mod addr;
pub mod engine;
pub mod guard;
pub mod machine;
pub mod net;
pub mod packet;
pub mod route;
pub mod smtp;
pub mod validate;
pub mod vmac;
