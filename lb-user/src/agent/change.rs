//! Runtime changes (`POST /v1/runtime`, `lb adm`): the neighbours of the
//! reals a change adds are looked up first (so a DR real forwards from the
//! first connection, as an ipvs destination does), the reconciler applies
//! the change, and the runtime layer is saved under the state directory
//! before the answer goes back: when `lb adm` returns, the change survives
//! a restart.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::Mutex;

use crate::{
    reconciler,
    runtime::{self, Change, ChangeError},
};

/// Everything a change needs; cheap to clone.
#[derive(Clone)]
pub struct Changer {
    pub core: reconciler::Handle,
    pub nl: rtnetlink::Handle,
    pub attached: Vec<(u32, [u8; 6])>,
    pub state_dir: PathBuf,
    /// The generation last saved: saves happen in change order, an older
    /// one never overwrites a newer one.
    pub saved: Arc<Mutex<u64>>,
    /// The drains running (`lb drain`): a change giving a drained real a
    /// weight again cancels its drain.
    pub drains: super::drain::Registry,
}

impl Changer {
    /// Applies `change`; `Ok` once it is in the data plane and saved.
    pub async fn apply(&self, change: Change) -> Result<(), ChangeError> {
        if let Change::EditReal { service, real } = &change {
            if real.weight != 0 {
                // Before the change: the drain must not remove the real
                // the operator has just given traffic again.
                self.drains.cancel_real(
                    &(*service, real.addr, real.port),
                    crate::drain::Cancel::Weight {
                        weight: real.weight,
                    },
                );
            }
        }
        let l2 = match &change {
            Change::AddReal { real, .. } | Change::EditReal { real, .. } => {
                // Unresolved yet is normal here (the solicitation is on its
                // way): the neighbour watch warns if it stays so.
                match crate::neigh::resolve(&self.nl, &self.attached, &[real.addr]).await {
                    Ok((l2, _)) => l2,
                    Err(e) => {
                        tracing::warn!(
                            "neighbour lookup for {} failed: {}; the neighbour watch follows up",
                            real.addr,
                            crate::util::chain(&e)
                        );
                        Default::default()
                    }
                }
            }
            _ => Default::default(),
        };
        let saved = self
            .core
            .change(change, l2)
            .await
            .map_err(|e| ChangeError::Refused(e.to_string()))??;
        self.save(saved).await
    }

    /// Saves the runtime layer as it is now (after a reload, which may have
    /// replaced runtime services by the file's); skipped when nothing
    /// changed since the last save.
    pub async fn save_current(&self) -> Result<(), ChangeError> {
        let saved = self
            .core
            .runtime()
            .await
            .map_err(|e| ChangeError::Refused(e.to_string()))?;
        self.save(saved).await
    }

    async fn save(&self, saved: reconciler::Saved) -> Result<(), ChangeError> {
        let mut last = self.saved.lock().await;
        if saved.generation <= *last {
            return Ok(());
        }
        let dir = self.state_dir.clone();
        let record = saved.record;
        let result = tokio::task::spawn_blocking(move || runtime::save(&dir, &record))
            .await
            .map_err(|e| ChangeError::Refused(format!("saving the runtime layer: {e}")))?;
        match result {
            Ok(()) => {
                *last = saved.generation;
                Ok(())
            }
            Err(e) => {
                // Applied but not saved: say so; the next change saves all.
                tracing::error!("{}", crate::util::chain(&e));
                Err(ChangeError::Refused(format!(
                    "applied, but not saved (it will not survive a restart): {}",
                    crate::util::chain(&e)
                )))
            }
        }
    }
}
