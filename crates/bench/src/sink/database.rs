//! The benchmark's own PostgreSQL connection: it creates and drops the effect tables and watches
//! them fill. A current-thread runtime blocks on each call; the benchmark itself is not async.

use anyhow::Context;
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

pub struct Database {
    runtime: Runtime,
    client: Client,
}

impl Database {
    /// Connects to `url` (`postgres://user:pass@host:port/db`).
    pub fn connect(url: &str) -> anyhow::Result<Database> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (client, connection) =
            runtime.block_on(tokio_postgres::connect(url, NoTls)).with_context(|| format!("connecting to {url}"))?;
        runtime.spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("once-bench: the benchmark's PostgreSQL connection ended: {error}");
            }
        });
        Ok(Database { runtime, client })
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.runtime.block_on(self.client.batch_execute(sql)).with_context(|| sql.to_string())
    }

    /// The first column of the one row `sql` returns, a bigint.
    pub fn number(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> anyhow::Result<i64> {
        let row = self.runtime.block_on(self.client.query_one(sql, params)).with_context(|| sql.to_string())?;
        row.try_get(0).with_context(|| sql.to_string())
    }

    /// The first column of the one row `sql` returns, as text (`SHOW`, `version()`).
    pub fn text(&self, sql: &str) -> anyhow::Result<String> {
        let row = self.runtime.block_on(self.client.query_one(sql, &[])).with_context(|| sql.to_string())?;
        row.try_get(0).with_context(|| sql.to_string())
    }
}
