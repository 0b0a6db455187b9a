//! The nemesis: a broker process the checker manages (`--broker-cmd`) and the seeded schedule that
//! kills it with SIGKILL, restarts it, and switches the proxy's faults on and off; client processes'
//! faults (the `txn` workload's copiers) run on its clock through [`ClientNemesis`].

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::history::FaultEvent;
use crate::rng::Rng;

/// How long a (re)started broker may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The command line for the broker: `{listen}` and `{advertised}` are replaced by the addresses; a
/// command with neither gets Once's flags appended.
pub fn broker_command(template: &str, listen: &str, advertised: &str) -> String {
    if template.contains("{listen}") || template.contains("{advertised}") {
        template.replace("{listen}", listen).replace("{advertised}", advertised)
    } else {
        format!("{template} --listen {listen} --advertised-listener {advertised}")
    }
}

/// A broker process run by `sh -c "exec COMMAND"`, so that its pid is the broker's own.
pub struct ManagedBroker {
    command: String,
    /// Where the broker listens: readiness is a successful TCP connect here.
    listen: String,
    /// stdout and stderr of every incarnation, appended.
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl ManagedBroker {
    /// Starts the broker and waits until it accepts connections.
    pub fn start(command: String, listen: String, log_path: PathBuf) -> anyhow::Result<ManagedBroker> {
        let mut broker = ManagedBroker { command, listen, log_path, child: None };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "the broker is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening the broker log {}", self.log_path.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {}", self.command))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the broker: {}", self.command))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(&self.listen).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                self.child = None;
                bail!("the broker exited with {status}; see {}", self.log_path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the broker did not accept connections on {} within {READY_TIMEOUT:?}", self.listen)
    }

    /// SIGKILL: no chance to flush anything or to mark a clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }
}

impl Drop for ManagedBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Faults on client processes, driven by the nemesis's loop until the faults end.
pub trait ClientNemesis {
    /// Called on every tick of the schedule (about every 10 ms).
    fn tick(&mut self, now: Instant) -> anyhow::Result<()>;
}

/// The faults the schedule may use.
pub struct Targets<'a> {
    /// The proxy's on/off switch, if there is a proxy.
    pub proxy: Option<Arc<AtomicBool>>,
    /// The broker, if the checker manages it and kills are enabled.
    pub broker: Option<&'a mut ManagedBroker>,
    /// Kills so far, for the progress line.
    pub kills: &'a AtomicU64,
    /// Client processes' faults, if the workload has any.
    pub clients: Option<&'a mut dyn ClientNemesis>,
}

/// Runs the seeded schedule until `until`, then heals: proxy faults off, broker running. Proxy faults
/// come in windows of 1–4 s with 0.5–2 s of calm between; the broker is killed every 2–5 s and stays
/// down for 0.2–1.5 s. Client faults keep their own schedule; healing them is the workload's business.
pub fn run(rng: &mut Rng, start: Instant, until: Instant, targets: Targets<'_>) -> anyhow::Result<Vec<FaultEvent>> {
    let Targets { proxy, mut broker, kills, mut clients } = targets;
    let mut events = Vec::new();
    let mut note = |kind: &str| events.push(FaultEvent { time_ms: elapsed_ms(start), kind: kind.to_string() });
    let now = Instant::now();
    let mut next_toggle = now + Duration::from_millis(rng.between(0, 500));
    let mut next_kill = now + Duration::from_millis(rng.between(2000, 5000));
    let mut next_restart: Option<Instant> = None;
    while Instant::now() < until {
        let now = Instant::now();
        if let (Some(switch), true) = (&proxy, now >= next_toggle) {
            let on = !switch.load(Ordering::Relaxed);
            switch.store(on, Ordering::Relaxed);
            note(if on { "proxy-on" } else { "proxy-off" });
            next_toggle =
                now + Duration::from_millis(if on { rng.between(1000, 4000) } else { rng.between(500, 2000) });
        }
        if let Some(broker) = broker.as_deref_mut() {
            if next_restart.is_none() && now >= next_kill {
                broker.kill9();
                kills.fetch_add(1, Ordering::Relaxed);
                note("kill");
                next_restart = Some(now + Duration::from_millis(rng.between(200, 1500)));
            } else if next_restart.is_some_and(|at| now >= at) {
                broker.restart()?;
                note("restart");
                next_restart = None;
                next_kill = Instant::now() + Duration::from_millis(rng.between(2000, 5000));
            }
        }
        if let Some(clients) = clients.as_deref_mut() {
            clients.tick(Instant::now())?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(switch) = &proxy {
        switch.store(false, Ordering::Relaxed);
        note("proxy-off");
    }
    if let Some(broker) = broker {
        if !broker.is_running() {
            broker.restart()?;
            note("restart");
        }
    }
    Ok(events)
}

/// Milliseconds since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::broker_command;

    #[test]
    fn once_gets_its_flags_and_other_brokers_use_placeholders() {
        assert_eq!(
            broker_command("once serve --data-dir d", "127.0.0.1:1", "127.0.0.1:2"),
            "once serve --data-dir d --listen 127.0.0.1:1 --advertised-listener 127.0.0.1:2"
        );
        assert_eq!(broker_command("b --port={listen} --adv={advertised}", "a:1", "a:2"), "b --port=a:1 --adv=a:2");
    }
}
