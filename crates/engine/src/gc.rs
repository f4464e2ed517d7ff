//! Garbage collection of the snapshot store, with what only the catalog knows.
//!
//! The block store alone can collect chunks and data keys no manifest references
//! ([`BlockStore::gc`]), but not a manifest nobody owns: a snapshot committed by a task that
//! then died before it recorded the snapshot, or whose catalog row was removed while its
//! manifest could not be. Such a manifest is invisible (no Describe shows it) and would keep
//! its chunks forever. [`collect`] deletes manifests that have no catalog row, are older than
//! the grace period, and belong to no unfinished task (a task stores its snapshots first and
//! records them when it ends), then collects what they referenced.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use blockstore::{BlockStore, GcReport, StoreError};
use catalog::{Catalog, CatalogError};

use crate::error::EngineError;

/// What [`collect`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcSummary {
    /// Manifests deleted because no catalog row owned them.
    pub orphaned_manifests: Vec<String>,
    /// The block store's collection that followed.
    #[serde(flatten)]
    pub store: GcReport,
}

/// The snapshot ids the unfinished tasks may have stored or may store: every disk of every
/// attempt so far and the next.
async fn in_use_by_tasks(catalog: &Catalog) -> Result<HashSet<String>, EngineError> {
    let mut ids = HashSet::new();
    for t in catalog.unfinished_tasks().await? {
        for attempt in 0..=t.attempts.max(0).saturating_add(1) {
            for disk in 0..crate::request::MAX_DISKS {
                ids.insert(crate::ctx::snapshot_id(&t.id, disk, attempt));
            }
        }
    }
    Ok(ids)
}

/// Deletes orphaned manifests older than `grace`, then runs the block store's collection
/// with the same grace.
pub async fn collect(
    catalog: &Catalog,
    store: &BlockStore,
    grace: Duration,
) -> Result<GcSummary, EngineError> {
    let busy = in_use_by_tasks(catalog).await?;
    let now = SystemTime::now();
    let mut orphaned = Vec::new();
    for (id, written) in store.manifests().await? {
        let young = now.duration_since(written).map_or(true, |age| age < grace);
        if young || busy.contains(&id) {
            continue;
        }
        match catalog.snapshot_by_id(&id).await {
            Ok(_) => continue,
            Err(CatalogError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match store.delete(&id).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {
                tracing::info!(snapshot = %id, "deleted a manifest no catalog row owns");
                orphaned.push(id);
            }
            Err(e) => return Err(e.into()),
        }
    }
    orphaned.sort();
    let store = store.gc(grace).await?;
    Ok(GcSummary {
        orphaned_manifests: orphaned,
        store,
    })
}
