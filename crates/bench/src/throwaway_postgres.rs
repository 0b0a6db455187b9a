//! A PostgreSQL server the sink workload starts when no `--database` is given: a new cluster
//! (`initdb`) of the newest /usr/lib/postgresql/*/bin under a temporary directory, on a free
//! loopback port, trust authentication for `postgres`, stopped (immediate) and deleted when
//! dropped. PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user
//! (`runuser`), which then owns the directory.
//!
//! Durable, as a user would run it: `fsync` and `synchronous_commit` keep their defaults (on), so
//! every sink transaction waits for its WAL flush — the cost both delivery modes share.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;

/// The running cluster.
pub struct ThrowawayPostgres {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
    /// Removed after the server is stopped (fields drop after `Drop::drop` runs).
    _dir: tempfile::TempDir,
}

/// The `bin` directory of the newest PostgreSQL installed from Debian's packages.
fn newest_bin() -> anyhow::Result<PathBuf> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install the postgresql package, or give --database")?;
    let mut versions: Vec<(u32, PathBuf)> = installed
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    Ok(versions.pop().context("no /usr/lib/postgresql/*/bin/initdb")?.1)
}

fn succeeded(output: std::io::Result<Output>, what: &str) -> anyhow::Result<()> {
    let output = output.with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl ThrowawayPostgres {
    /// Creates and starts the cluster; returns once it accepts connections.
    pub fn start() -> anyhow::Result<ThrowawayPostgres> {
        ThrowawayPostgres::start_with_connections(20)
    }

    /// [`ThrowawayPostgres::start`] allowing `max_connections` sessions (W7 opens one per sender).
    pub fn start_with_connections(max_connections: usize) -> anyhow::Result<ThrowawayPostgres> {
        let bin = newest_bin()?;
        // Under the system's temporary directory, not the current one: the `postgres` user must be
        // able to reach it.
        let dir = tempfile::Builder::new().prefix("once-bench-postgres-").tempdir()?;
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
        if as_root {
            succeeded(Command::new("chown").arg("postgres:").arg(dir.path()).output(), "chown postgres")?;
        }
        let port = crate::broker::free_loopback_address()?.rsplit(':').next().unwrap_or("0").parse()?;
        let cluster = ThrowawayPostgres { port, bin, data: dir.path().join("data"), as_root, _dir: dir };
        let initdb = cluster
            .program("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"])
            .output();
        succeeded(initdb, "initdb")?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}",
            cluster.run_dir().display()
        );
        let start = cluster
            .program("pg_ctl")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(cluster.run_dir().join("server.log"))
            .arg("start")
            .output();
        succeeded(start, "pg_ctl start")?;
        Ok(cluster)
    }

    /// Where the socket and the server's log go: beside the data directory.
    fn run_dir(&self) -> &Path {
        self.data.parent().unwrap_or(&self.data)
    }

    /// A server program, run as `postgres` when the benchmark runs as root.
    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// The postmaster's process id (the first line of `postmaster.pid`): the root of the server's
    /// process tree, for its CPU time.
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let path = self.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let first = text.lines().next().unwrap_or_default().trim();
        first.parse().with_context(|| format!("{}: '{first}' is not a process id", path.display()))
    }

    /// HOST:PORT it listens on.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL `once sink --database` takes.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let stop = self.program("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
        if let Err(error) = succeeded(stop, "pg_ctl stop") {
            eprintln!("once-bench: stopping the throw-away PostgreSQL: {error:#}");
        }
    }
}
