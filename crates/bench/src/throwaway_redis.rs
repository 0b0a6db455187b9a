//! A Redis server W7 starts itself: `redis-server` from the PATH, durable as `scripts/bench/peers.sh`
//! starts it (`--appendonly yes --appendfsync always --save ''`), on a free loopback port, its data in
//! a new directory under the benchmark's `--data-dir` (the broker's disk), killed and deleted when
//! dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The running server.
pub struct ThrowawayRedis {
    child: Child,
    address: String,
    /// Removed after the server is killed (fields drop after `Drop::drop` runs).
    _dir: tempfile::TempDir,
}

impl ThrowawayRedis {
    /// Starts `redis-server`; returns once it accepts connections.
    pub fn start(data_dir: &Path) -> anyhow::Result<ThrowawayRedis> {
        let dir = tempfile::Builder::new().prefix("once-bench-redis-").tempdir_in(data_dir)?;
        let address = crate::broker::free_loopback_address()?;
        let port = address.rsplit(':').next().unwrap_or("0").to_string();
        let log = std::fs::File::create(dir.path().join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--dir"])
            .arg(dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("no redis-server on the PATH (Debian: apt-get install redis-server)")?;
        let mut redis = ThrowawayRedis { child, address, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&redis.address).is_err() {
            if let Some(status) = redis.child.try_wait()? {
                anyhow::bail!("redis-server exited with {status} before accepting connections");
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not accept a connection within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(redis)
    }

    /// The server's process id (for `/proc` measurements).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// HOST:PORT it listens on.
    pub fn address(&self) -> String {
        self.address.clone()
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
