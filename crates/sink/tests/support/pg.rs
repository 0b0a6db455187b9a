//! A throw-away PostgreSQL cluster for tests: `initdb` and `pg_ctl` from the newest
//! /usr/lib/postgresql/*/bin, under a temporary directory, on a free loopback port, stopped
//! (immediate mode) and deleted on drop. PostgreSQL refuses to run as root, so when the tests run
//! as root the server runs as the `postgres` user (`runuser`). No server is ever needed by hand;
//! `.ci/run` installs the `postgresql` package.
//!
//! Shared by the once-sink tests and the `once sink` end-to-end tests (`#[path]`-included).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
    _dir: tempfile::TempDir,
}

fn newest_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/initdb").1
}

fn checked(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with("")
    }

    /// A cluster that can decode logically (`wal_level = logical`).
    pub fn start_logical() -> PgCluster {
        PgCluster::start_with("-c wal_level=logical")
    }

    /// A cluster started with `options` (server `-c` flags) added.
    pub fn start_with(options: &str) -> PgCluster {
        let bin = newest_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
        if as_root {
            checked(Command::new("chown").arg("postgres:").arg(dir.path()).output().expect("chown"), "chown");
        }
        let data = dir.path().join("data");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let cluster = PgCluster { port, bin, data, as_root, _dir: dir };
        let output = cluster
            .server_command("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        checked(output, "initdb");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40 {options}",
            cluster.socket_dir().display()
        );
        let output = cluster
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(cluster.socket_dir().join("server.log"))
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        checked(output, "pg_ctl start");
        cluster
    }

    fn socket_dir(&self) -> &Path {
        self.data.parent().expect("data has a parent")
    }

    /// A command for a server program, as `postgres` when the tests run as root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` of this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` with psql and returns its unaligned, tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`PgCluster::psql`] in database `name`.
    pub fn psql_in(&self, name: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", name])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .expect("run psql");
        checked(output.clone(), &format!("psql {sql}"));
        String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.server_command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}
