//! The connection-count sweep.
//!
//! The data plane counts connections per real (ipvs's ActiveConn /
//! InActConn) with atomic adds when a flow is scheduled, changes state or is
//! replaced. A flow that simply goes idle is never seen again by the data
//! plane, so its count cannot be released there. The agent therefore walks
//! the connection table periodically, counts the live entries per real and
//! writes the difference to the counts as a correction (`LB_CONN_ADJ`),
//! which the data plane subtracts. Accuracy: exact for flows that close with
//! FIN/RST; an idle flow is released at most one sweep interval after its
//! timeout; connections opened or closed while a sweep runs may be counted
//! off by one until the next sweep.

use std::{collections::BTreeMap, time::Duration};

use lb_common::{RealConns, CT_ESTABLISHED};

use aya::maps::MapError;

use crate::{dataplane::Dataplane, util::monotonic_ns};

/// A sweep that could not read or correct the counts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Map(#[from] MapError),
}

/// What one sweep found.
#[derive(Debug, Default)]
pub struct Report {
    pub live: u64,
    pub expired: u64,
    pub took: Duration,
}

/// Counts the live entries per real and writes the corrections. `reals`
/// maps each real id in use to its generation.
pub fn sweep(dp: &mut Dataplane, reals: &BTreeMap<u32, u32>) -> Result<Report, Error> {
    let start = std::time::Instant::now();
    let timeouts = dp.timeouts_in_effect();
    // Data-plane counts first: connections made during the walk are then
    // in the live count but not in the snapshot (counted once more until the
    // next sweep), never the other way round.
    let mut counted = BTreeMap::new();
    for &id in reals.keys() {
        counted.insert(id, dp.real_conns.get(&id, 0)?);
    }
    let now = monotonic_ns();
    let mut live: BTreeMap<u32, RealConns> = BTreeMap::new();
    let mut report = Report::default();
    for item in dp.conntrack.iter() {
        let Ok((_, c)) = item else { continue };
        if timeouts.time_left_ns(c.state, c.last_ns, now).is_none() {
            report.expired += 1;
            continue;
        }
        if reals.get(&c.real_id) != Some(&c.real_gen) {
            continue;
        }
        report.live += 1;
        let e = live.entry(c.real_id).or_default();
        if c.state == CT_ESTABLISHED {
            e.active += 1;
        } else {
            e.inactive += 1;
        }
    }
    for (id, c) in counted {
        let l = live.get(&id).copied().unwrap_or_default();
        let adj = RealConns {
            active: c.active.wrapping_sub(l.active),
            inactive: c.inactive.wrapping_sub(l.inactive),
        };
        if dp.conn_adj.get(&id, 0)? != adj {
            dp.conn_adj.set(id, adj, 0)?;
        }
    }
    report.took = start.elapsed();
    Ok(report)
}
