//! A broker process the benchmark starts itself (the restart and sink workloads): `--serve-cmd`, or
//! this executable's `serve`, on a data directory of its own, killed with SIGKILL when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Plan;

/// A broker process started by the benchmark, killed with SIGKILL when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts the broker listening on `listen` with its data in `data_dir`, its output appended to
    /// `log`. `--serve-cmd` is split on whitespace, `{data_dir}` and `{listen}` replaced.
    pub fn start(plan: &Plan, listen: &str, data_dir: &Path, log: &Path) -> anyhow::Result<Server> {
        let data = data_dir.to_str().context("the data directory is not UTF-8")?;
        let mut command = match &plan.args.serve_cmd {
            Some(template) => {
                let mut words = template
                    .split_whitespace()
                    .map(|word| word.replace("{data_dir}", data).replace("{listen}", listen));
                let mut command = Command::new(words.next().context("--serve-cmd is empty")?);
                command.args(words);
                command
            }
            None => {
                let mut command = Command::new(std::env::current_exe().context("locating the once executable")?);
                command.args(["serve", "--listen", listen, "--data-dir", data]);
                command
            }
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        Ok(Server { child: command.spawn().context("starting the broker (--serve-cmd)")? })
    }

    /// The broker's process id (for `/proc` measurements).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to 60 s for the broker to accept a connection on `address`; fails at once if it
    /// exited (a port already taken, a bad `--serve-cmd`).
    pub fn wait_until_accepting(&mut self, address: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(address).is_err() {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the broker exited with {status} before accepting connections on {address}");
            }
            anyhow::ensure!(Instant::now() < deadline, "the broker did not accept a connection within 60 s");
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback address with a port that was free a moment ago, for a server the benchmark starts.
pub fn free_loopback_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.to_string())
}
