//! A real `once serve` process for integration tests: started on a free port with its own data
//! directory, killed with SIGKILL or stopped with SIGTERM, restarted on the same data.
#![allow(dead_code)]
// rdkafka's `send` hands a refused record back in its error: large by design.
#![allow(clippy::result_large_err)]

pub mod proxy;
pub mod security;
pub mod txn;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Message};

/// Queues `record` with `send`, calling `wait` and trying again while librdkafka's local queue is
/// full; any other error is returned at once (retrying it would spin until the test's timeout).
pub fn queue<R>(
    mut record: R,
    mut send: impl FnMut(R) -> Result<(), (KafkaError, R)>,
    mut wait: impl FnMut(),
) -> Result<(), KafkaError> {
    loop {
        match send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                wait();
            }
            Err((error, _)) => return Err(error),
        }
    }
}

pub struct BrokerProcess {
    pub data_dir: PathBuf,
    pub port: u16,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    /// Shell `ulimit` arguments the broker starts under (e.g. `-S -n 1024`).
    ulimit: Option<String>,
    _temp: Option<tempfile::TempDir>,
}

/// What `once serve` logs once it accepts connections.
const SERVING: &str = "once is serving";

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl BrokerProcess {
    /// Starts a broker on a fresh data directory.
    pub fn start(extra_args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_with(extra_args, None, None)
    }

    /// Starts a broker that is node 7 and advertises `localhost:PORT` while listening on
    /// 127.0.0.1:PORT: as a node of a cluster, neither node 0 nor at the address a client was given.
    pub fn start_node_seven() -> BrokerProcess {
        let port = free_port();
        let listener = format!("PLAINTEXT://127.0.0.1:{port}");
        let advertised = format!("PLAINTEXT://localhost:{port}");
        BrokerProcess::start_with_listeners(
            &["--node-id", "7", "--listener", &listener, "--advertised-listener", &advertised],
            port,
        )
    }

    /// Starts a broker whose `--listener`s are in `extra_args`; `plaintext_port` is the port of its
    /// PLAINTEXT listener, which `bootstrap()` names and readiness is checked on.
    pub fn start_with_listeners(extra_args: &[&str], plaintext_port: u16) -> BrokerProcess {
        BrokerProcess::start_with_listeners_in(extra_args, plaintext_port, None)
    }

    /// [`BrokerProcess::start_with_listeners`] with its data in `data_dir` (default: a fresh
    /// temporary directory).
    pub fn start_with_listeners_in(
        extra_args: &[&str],
        plaintext_port: u16,
        data_dir: Option<PathBuf>,
    ) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = BrokerProcess {
            log_path: temp.path().join("broker.log"),
            data_dir: data_dir.unwrap_or_else(|| temp.path().join("data")),
            port: plaintext_port,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            ulimit: None,
            _temp: Some(temp),
        };
        broker.spawn();
        broker
    }

    /// Starts a broker with its data in `data_dir` (default: a fresh temporary directory) and,
    /// with `ulimit`, under `sh -c "ulimit ULIMIT; exec once serve …"`. Its port is picked here, so
    /// if another process takes it between the pick and the bind, it is picked again.
    pub fn start_with(extra_args: &[&str], data_dir: Option<PathBuf>, ulimit: Option<&str>) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.unwrap_or_else(|| temp.path().join("data"));
        let mut broker = BrokerProcess {
            log_path: temp.path().join("broker.log"),
            data_dir,
            port: free_port(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            ulimit: ulimit.map(str::to_string),
            _temp: Some(temp),
        };
        for _attempt in 1..3 {
            match broker.try_spawn() {
                Ok(()) => return broker,
                // Only a clash on the port picked here is worth another pick (an HTTP port in
                // `extra_args` would clash again).
                Err(problem) if problem.contains("Address already in use") && problem.contains(&broker.bootstrap()) => {
                    broker.port = free_port();
                }
                Err(problem) => panic!("{problem}"),
            }
        }
        broker.spawn();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Err(problem) = self.try_spawn() {
            panic!("{problem}");
        }
    }

    /// Starts `once serve` and waits until it serves, or says why it does not.
    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "broker already running");
        // The log is appended to across restarts: this start's part begins at its current length.
        let log_before = self.log().len();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open broker log");
        let mut command = match &self.ulimit {
            Some(ulimit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit {ulimit} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_once")]);
                shell
            }
            None => Command::new(env!("CARGO_BIN_EXE_once")),
        };
        command.arg("serve");
        // With --listener flags the PLAINTEXT one is among them (--listen beside them is refused).
        if !self.extra_args.iter().any(|arg| arg == "--listener") {
            command.arg("--listen").arg(self.bootstrap());
        }
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("ONCE_LOG", "info")
            .env_remove("ONCE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn once serve");
        self.child = Some(child);
        let ready = self.wait_ready(log_before);
        if ready.is_err() {
            self.kill9();
        }
        ready
    }

    /// What this process logged since `from` (a byte length of the log before it started).
    fn log_since(&self, from: usize) -> String {
        self.log().get(from..).unwrap_or_default().to_string()
    }

    /// Ready when this process has said it serves and its port accepts a connection: a connection
    /// alone could reach another process that took the port. An error holds this start's log only.
    fn wait_ready(&mut self, log_before: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log_since(log_before).contains(SERVING) && TcpStream::connect(self.bootstrap()).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("broker exited early with {status}; log:\n{}", self.log_since(log_before)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("broker did not serve within 60 s; log:\n{}", self.log_since(log_before)))
    }

    /// SIGKILL: no chance to flush or mark a clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!("broker did not exit within 30 s of SIGTERM; log:\n{}", self.log());
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The running broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the broker is running")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `lines` to `topic` with `once produce` (one record per line); panics if it fails.
pub fn produce_lines(broker: &BrokerProcess, topic: &str, lines: &str) {
    produce_with(broker, topic, lines, &[]);
}

/// Sends `KEY,VALUE` lines to `topic` with `once produce --key-separator ,`; panics if it fails.
pub fn produce_keyed_lines(broker: &BrokerProcess, topic: &str, lines: &str) {
    produce_with(broker, topic, lines, &["--key-separator", ","]);
}

fn produce_with(broker: &BrokerProcess, topic: &str, lines: &str, extra_args: &[&str]) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["produce", topic, "--bootstrap", &broker.bootstrap()])
        .args(extra_args)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn once produce");
    child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write lines");
    assert!(child.wait().expect("wait").success(), "once produce failed");
}

/// Runs `once` with arguments and returns its stdout; panics with stderr if it fails.
pub fn once(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_once")).args(args).output().expect("run once");
    assert!(
        output.status.success(),
        "once {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// One delivery report: (record number, partition, offset or error).
pub type Delivery = (usize, i32, Result<i64, String>);

/// Remembers every delivery report.
#[derive(Clone, Default)]
pub struct Deliveries(pub Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, number: Box<usize>) {
        let entry = match result {
            Ok(message) => (*number, message.partition(), Ok(message.offset())),
            Err((error, message)) => (*number, message.partition(), Err(error.to_string())),
        };
        self.0.lock().expect("deliveries lock").push(entry);
    }
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
