//! Networks exempt from the address and subnet limits, never from per-account limits.
//!
//! Stored in the accounts database (configuration must survive a Redis restart) and cached in
//! each replica, refreshed every `server.allowlist_refresh_secs`, so checking an attempt costs
//! no query. A change through one replica applies there at once and on the others at their
//! next refresh.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use sqlx::{AnyPool, Row};

use crate::accounts::db_error;

/// The allowlist and its cache.
#[derive(Clone)]
pub struct Allowlist {
    pool: AnyPool,
    cache: Arc<RwLock<Arc<Vec<IpNet>>>>,
}

impl Allowlist {
    /// Loads the allowlist from the database.
    pub async fn load(pool: AnyPool) -> anyhow::Result<Self> {
        let allowlist = Self {
            pool,
            cache: Arc::default(),
        };
        allowlist.refresh().await?;
        Ok(allowlist)
    }

    /// Keeps the cache fresh in the background.
    pub fn spawn_refresh(&self, every: Duration) {
        let allowlist = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                if let Err(error) = allowlist.refresh().await {
                    tracing::warn!(error = format!("{error:#}"), "allowlist refresh failed");
                }
            }
        });
    }

    /// Reloads the cache from the database.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let networks = self.networks().await?;
        *self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(networks);
        Ok(())
    }

    /// Whether `ip` is in an allowlisted network (from the cache).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// Every allowlisted network, from the database.
    pub async fn networks(&self) -> anyhow::Result<Vec<IpNet>> {
        let rows = sqlx::query("SELECT network FROM allowlist ORDER BY network")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(e, "reading the allowlist"))?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>("network").ok()?.parse().ok())
            .collect())
    }

    /// Adds a network; returns whether it was new.
    pub async fn add(&self, network: IpNet) -> anyhow::Result<bool> {
        let now = crate::accounts::now_ms();
        let added = sqlx::query(
            "INSERT INTO allowlist (network, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(network.trunc().to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(e, "adding to the allowlist"))?
        .rows_affected();
        self.refresh().await?;
        Ok(added > 0)
    }

    /// Removes a network; returns whether it was there.
    pub async fn remove(&self, network: IpNet) -> anyhow::Result<bool> {
        let removed = sqlx::query("DELETE FROM allowlist WHERE network = $1")
            .bind(network.trunc().to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(e, "removing from the allowlist"))?
            .rows_affected();
        self.refresh().await?;
        Ok(removed > 0)
    }
}
