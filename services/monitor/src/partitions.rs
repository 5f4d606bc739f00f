//! Partitions of the deployments across monitor replicas, so each window is counted by one of
//! them. A deployment belongs to partition `fnv1a(name) mod service.partitions`; each partition
//! is a lease in the monitor's database (`flywheel_db::leases`). Replicas announce themselves
//! (`member:` leases), each holds at most its fair share (partitions ÷ live replicas, rounded
//! up), gives extras back when a replica joins and takes over the partitions of one that
//! stopped renewing. A partition's reader resumes from that partition's checkpoint, which only
//! the lease's current holder may write.

use std::collections::BTreeMap;
use std::time::Duration;

use flywheel_db::leases::{self, Held};
use flywheel_runtime::{CancellationToken, ServiceResult};
use tokio::task::JoinHandle;

use crate::reader::{Assignment, WindowConfig};
use crate::{AppState, SERVICE};

/// One partition of the deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    /// Which one, from 0.
    pub(crate) index: u32,
    /// Of how many.
    pub(crate) count: u32,
}

impl Partition {
    /// Whether `deployment` belongs to this partition.
    pub(crate) fn holds(self, deployment: &str) -> bool {
        self.count <= 1 || partition_of(deployment, self.count) == self.index
    }
}

/// The partition of a deployment: FNV-1a of its name (stable across builds and machines).
pub(crate) fn partition_of(deployment: &str, count: u32) -> u32 {
    let hash = deployment.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// How the work is split (`service.partitions`, `service.lease_ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partitioning {
    /// Partitions of the deployments; fixed for an installation (each has its own checkpoint).
    pub(crate) count: u32,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub(crate) ttl: Duration,
}

struct Owned {
    lease: Held,
    stop: CancellationToken,
    reader: JoinHandle<ServiceResult>,
}

/// Holds this replica's share of the partitions and runs a reader for each until shutdown.
pub(crate) async fn run(
    state: AppState,
    config: WindowConfig,
    partitioning: Partitioning,
    shutdown: CancellationToken,
) -> ServiceResult {
    let replica = format!(
        "{}-{}",
        hostname(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    tracing::info!(%replica, partitions = partitioning.count, "monitor replica counting its share of the partitions");
    let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
    let mut tick = tokio::time::interval(partitioning.ttl / 3);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = rebalance(
            &state,
            &config,
            partitioning,
            &replica,
            &mut owned,
            &shutdown,
        )
        .await
        {
            tracing::warn!(error = %e, "partition leases not renewed");
        }
    }
    // Readers save their checkpoints, then the leases go back at once for a quick handover.
    for (_, partition) in std::mem::take(&mut owned) {
        give_back(&state, partition).await;
    }
    let member = Held {
        name: format!("member:{replica}"),
        holder: replica,
        epoch: 1,
    };
    let _ = leases::release(&state.db, SERVICE, &member).await;
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "monitor".to_owned())
}

fn lease_name(index: u32, count: u32) -> String {
    format!("partition:{index}-of-{count}")
}

/// Stops a partition's reader (it saves its checkpoint) and releases its lease.
async fn give_back(state: &AppState, partition: Owned) {
    partition.stop.cancel();
    let _ = partition.reader.await;
    if let Err(e) = leases::release(&state.db, SERVICE, &partition.lease).await {
        tracing::warn!(lease = %partition.lease.name, error = %e, "lease not released; it runs out instead");
    }
}

async fn rebalance(
    state: &AppState,
    config: &WindowConfig,
    partitioning: Partitioning,
    replica: &str,
    owned: &mut BTreeMap<u32, Owned>,
    shutdown: &CancellationToken,
) -> crate::Result<()> {
    let ttl = partitioning.ttl;
    leases::acquire(
        &state.db,
        SERVICE,
        &format!("member:{replica}"),
        replica,
        ttl,
    )
    .await?;
    let members = leases::live(&state.db, SERVICE, "member:")
        .await?
        .len()
        .max(1);
    let fair = usize::try_from(partitioning.count)
        .unwrap_or(usize::MAX)
        .div_ceil(members);
    // Renew what is held; a reader whose lease went elsewhere (or that ended) is dropped.
    let mut lost = Vec::new();
    for (index, partition) in owned.iter() {
        let renewed =
            leases::acquire(&state.db, SERVICE, &partition.lease.name, replica, ttl).await?;
        if renewed.as_ref() != Some(&partition.lease) || partition.reader.is_finished() {
            lost.push(*index);
        }
    }
    for index in lost {
        if let Some(partition) = owned.remove(&index) {
            tracing::warn!(
                partition = index,
                "partition lost; another replica counts it"
            );
            partition.stop.cancel();
        }
    }
    // A replica joined: give back the extras.
    while owned.len() > fair {
        let Some((index, partition)) = owned.pop_last() else {
            break;
        };
        tracing::info!(partition = index, members, "partition handed over");
        give_back(state, partition).await;
    }
    // Take free partitions up to the fair share.
    for index in 0..partitioning.count {
        if owned.len() >= fair {
            break;
        }
        if owned.contains_key(&index) {
            continue;
        }
        let name = lease_name(index, partitioning.count);
        let Some(lease) = leases::acquire(&state.db, SERVICE, &name, replica, ttl).await? else {
            continue;
        };
        tracing::info!(partition = index, epoch = lease.epoch, "partition taken");
        let stop = shutdown.child_token();
        let assignment = Assignment {
            partition: Partition {
                index,
                count: partitioning.count,
            },
            lease: lease.clone(),
        };
        let reader = tokio::spawn(crate::reader::run(
            state.clone(),
            config.clone(),
            assignment,
            stop.clone(),
        ));
        owned.insert(
            index,
            Owned {
                lease,
                stop,
                reader,
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deployment_has_exactly_one_partition_and_they_spread() {
        let count = 4;
        let mut sizes = [0u32; 4];
        for i in 0..400 {
            let name = format!("deployment-{i}");
            let holders: Vec<u32> = (0..count)
                .filter(|index| {
                    Partition {
                        index: *index,
                        count,
                    }
                    .holds(&name)
                })
                .collect();
            assert_eq!(holders.len(), 1, "{name}: {holders:?}");
            sizes[holders[0] as usize] += 1;
        }
        assert!(sizes.iter().all(|s| (60..=140).contains(s)), "{sizes:?}");
        assert!(Partition { index: 0, count: 1 }.holds("anything"));
        // FNV-1a's published value for "a" (0xaf63dc4c8601ec8c): a name's partition must
        // never change between releases.
        assert_eq!(partition_of("a", 1000), 996);
    }
}
