//! The nemesis: a broker process the checker manages (`--broker-cmd`) and the seeded schedule that
//! kills it with SIGKILL (or cuts its power), pauses it with SIGSTOP, restarts it, and switches the
//! proxy's faults on and off; client processes'
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
    /// With power-loss faults: the manifest the broker's storage hook writes (Once's
    /// `ONCE_TEST_POWER_LOSS_MANIFEST`), applied while the broker is down.
    power_loss_manifest: Option<PathBuf>,
    /// Power losses applied so far (their images alternate).
    power_losses_applied: u64,
    paused: bool,
    /// Where the broker listens: readiness is a successful TCP connect here.
    listen: String,
    /// stdout and stderr of every incarnation, appended.
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl ManagedBroker {
    /// Starts the broker and waits until it accepts connections.
    pub fn start(
        command: String,
        listen: String,
        log_path: PathBuf,
        power_loss: bool,
    ) -> anyhow::Result<ManagedBroker> {
        let power_loss_manifest = power_loss.then(|| log_path.with_extension("power-loss-manifest"));
        let mut broker = ManagedBroker {
            command,
            power_loss_manifest,
            power_losses_applied: 0,
            paused: false,
            listen,
            log_path,
            child: None,
        };
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
        let mut command = Command::new("sh");
        if let Some(manifest) = &self.power_loss_manifest {
            command.env(crate::power_loss::MANIFEST_ENV, manifest);
        }
        let child = command
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
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
        }
    }

    /// SIGSTOP: the broker freezes with its connections open (a GC pause, a VM stall).
    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal("STOP");
            self.paused = true;
        }
    }

    /// SIGCONT after [`ManagedBroker::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("CONT");
            self.paused = false;
        }
    }

    /// Simulated power loss: SIGUSR2 makes Once's storage hook record what is durable and die by
    /// SIGKILL; the unsynced tail of every file is then thrown away, as a power cut would (cut off, or
    /// zeros again, in turn: `crate::power_loss::Image`). Returns the
    /// bytes thrown away. A broker that wrote no manifest (another broker, or Once built without the
    /// `test-hooks` feature, which dies of the signal or ignores the hook) fails the run: counting
    /// its death as a power loss would report a pass for a fault never injected.
    pub fn power_loss(&mut self) -> anyhow::Result<u64> {
        self.resume();
        let Some(mut child) = self.child.take() else { return Ok(0) };
        // A broker that already died on its own is not a build without hooks: say what happened.
        if let Some(status) = child.try_wait()? {
            bail!(
                "power-loss fault: the broker had already exited ({status}) before the fault; log: {}",
                self.log_path.display()
            );
        }
        self.signal_child(&child, "USR2");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let Some(manifest) = &self.power_loss_manifest else { return Ok(0) };
        if !manifest.exists() {
            bail!(
                "power-loss fault: the broker wrote no power-loss manifest ({}) on SIGUSR2 (it ended with \
                 {status}; log: {}). Once writes it only when built with the test hooks: \
                 `cargo build --release -p once-cli --features test-hooks`; other brokers cannot take \
                 this fault (leave `power-loss` out of --faults)",
                manifest.display(),
                self.log_path.display()
            );
        }
        // The two images of an unsynced tail, in turn.
        self.power_losses_applied += 1;
        let image = match self.power_losses_applied % 2 {
            1 => crate::power_loss::Image::Cut,
            _ => crate::power_loss::Image::Zeroed,
        };
        let applied = crate::power_loss::apply(manifest, image)
            .with_context(|| format!("applying the power loss from {}", manifest.display()))?;
        Ok(applied.bytes_lost)
    }

    fn signal_child(&self, child: &Child, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
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

/// Which broker faults the schedule uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerFaults {
    pub kill: bool,
    pub power_loss: bool,
    pub pause: bool,
}

/// The faults the schedule may use.
pub struct Targets<'a> {
    /// The proxy's on/off switch, if there is a proxy.
    pub proxy: Option<Arc<AtomicBool>>,
    /// The broker, if the checker manages it.
    pub broker: Option<&'a mut ManagedBroker>,
    pub broker_faults: BrokerFaults,
    /// Kills, power losses and pauses so far, for the progress line and the report.
    pub kills: &'a AtomicU64,
    pub power_losses: &'a AtomicU64,
    pub pauses: &'a AtomicU64,
    /// Client processes' faults, if the workload has any.
    pub clients: Vec<&'a mut dyn ClientNemesis>,
}

/// Runs the seeded schedule until `until`, then heals: proxy faults off, broker running. Proxy faults
/// come in windows of 1–4 s with 0.5–2 s of calm between; the broker is crashed (kill -9 or power
/// loss, chosen at random when both are on) every 2–5 s and stays down for 0.2–1.5 s, and paused
/// (SIGSTOP) every 3–8 s for 0.3–2 s. Client faults keep their own schedule; healing them is the
/// workload's business.
pub fn run(rng: &mut Rng, start: Instant, until: Instant, targets: Targets<'_>) -> anyhow::Result<Vec<FaultEvent>> {
    let mut events = Vec::new();
    run_recording(rng, start, until, targets, &mut events)?;
    Ok(events)
}

/// [`run`], noting every fault in `events` as it happens, so that a schedule that fails (a broker
/// that does not come back) still leaves what it did for an incomplete report.
pub fn run_recording(
    rng: &mut Rng,
    start: Instant,
    until: Instant,
    targets: Targets<'_>,
    events: &mut Vec<FaultEvent>,
) -> anyhow::Result<()> {
    let Targets { proxy, mut broker, broker_faults, kills, power_losses, pauses, mut clients } = targets;
    let mut note = |kind: &str| events.push(FaultEvent { time_ms: elapsed_ms(start), kind: kind.to_string() });
    let now = Instant::now();
    let mut next_toggle = now + Duration::from_millis(rng.between(0, 500));
    let mut next_kill = now + Duration::from_millis(rng.between(2000, 5000));
    let mut next_restart: Option<Instant> = None;
    let mut next_pause = now + Duration::from_millis(rng.between(3000, 8000));
    let mut resume_at: Option<Instant> = None;
    let crashes = broker_faults.kill || broker_faults.power_loss;
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
            if crashes && next_restart.is_none() && now >= next_kill {
                if resume_at.take().is_some() {
                    broker.resume();
                    note("resume");
                }
                let power_loss = broker_faults.power_loss && (!broker_faults.kill || rng.between(0, 1) == 1);
                if power_loss {
                    let lost = broker.power_loss()?;
                    power_losses.fetch_add(1, Ordering::Relaxed);
                    note(&format!("power-loss ({lost} unsynced bytes lost)"));
                } else {
                    broker.kill9();
                    kills.fetch_add(1, Ordering::Relaxed);
                    note("kill");
                }
                next_restart = Some(now + Duration::from_millis(rng.between(200, 1500)));
            } else if next_restart.is_some_and(|at| now >= at) {
                broker.restart()?;
                note("restart");
                next_restart = None;
                next_kill = Instant::now() + Duration::from_millis(rng.between(2000, 5000));
            } else if broker_faults.pause && next_restart.is_none() && resume_at.is_none() && now >= next_pause {
                broker.pause();
                pauses.fetch_add(1, Ordering::Relaxed);
                note("pause");
                resume_at = Some(now + Duration::from_millis(rng.between(300, 2000)));
            } else if resume_at.is_some_and(|at| now >= at) {
                broker.resume();
                note("resume");
                resume_at = None;
                next_pause = Instant::now() + Duration::from_millis(rng.between(3000, 8000));
            }
        }
        for client in clients.iter_mut() {
            client.tick(Instant::now())?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(switch) = &proxy {
        switch.store(false, Ordering::Relaxed);
        note("proxy-off");
    }
    if let Some(broker) = broker {
        if broker.is_paused() {
            broker.resume();
            note("resume");
        }
        if !broker.is_running() {
            broker.restart()?;
            note("restart");
        }
    }
    Ok(())
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
