//! Figures for message-id deduplication in a real broker: produce throughput with dedup on and off
//! (same run, interleaved), the broker's resident memory per live id, and the time from a restart
//! after kill -9 to serving (with the index's snapshot, and without it).
//!
//! ```sh
//! cargo build --release -p once-cli --example dedup_broker_bench
//! target/release/examples/dedup_broker_bench --once target/release/once --data-dir /tmp/once-dedup-bench
//! ```
//!
//! With `--dedup-memory-bytes N` the broker keeps at most about N bytes of each index in RAM and
//! the rest of the sealed chunks on disk: run it once with a budget below the index's size and once
//! without (all resident) to compare.
//!
//! It starts its own `once serve` (with `--metrics-listen`), creates its topics, and talks to it with
//! librdkafka idempotent producers (acks=all); records have a null key, a 100-byte value (`--value-bytes`) and a unique
//! `msg-id` header. The dedup topics use `dedup.source=header:msg-id`, `dedup.window.ms=-1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser)]
struct Args {
    /// The `once` binary.
    #[arg(long, default_value = "target/release/once")]
    once: PathBuf,
    /// Data directory of the broker (emptied first).
    #[arg(long, default_value = "/tmp/once-dedup-bench")]
    data_dir: PathBuf,
    /// Live ids to hold for the memory and restart figures.
    #[arg(long, default_value_t = 10_000_000)]
    ids: u64,
    /// Records per throughput run and mode.
    #[arg(long, default_value_t = 1_000_000)]
    throughput_records: u64,
    /// Throughput runs (each: dedup off, then on).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Producer clients, each sending an equal share.
    #[arg(long, default_value_t = 2)]
    producers: u64,
    /// `once serve --dedup-memory-bytes` (the broker's default if not given).
    #[arg(long)]
    dedup_memory_bytes: Option<u64>,
    /// Skip the throughput runs on empty topics (to keep a run short).
    #[arg(long)]
    skip_fresh: bool,
    /// Seconds the broker rests after the fill before its resident set is read (merges settle).
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,

    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// The producers' `compression.type` (none, gzip, snappy, lz4, zstd).
    #[arg(long, default_value = "none")]
    compression: String,
    /// Print the records acknowledged in each quarter second of every throughput run (where a run
    /// slows down, and for how long).
    #[arg(long)]
    timeline: bool,
}

struct Broker {
    args_once: PathBuf,
    data_dir: PathBuf,
    port: u16,
    metrics_port: u16,
    log: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Broker {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker; returns the time until it accepted a connection.
    fn start(&mut self) -> Duration {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let started = Instant::now();
        let child = Command::new(&self.args_once)
            .args(["serve", "--listen", &self.bootstrap(), "--metrics-listen"])
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("ONCE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn once serve");
        self.child = Some(child);
        while TcpStream::connect(self.bootstrap()).is_err() {
            assert!(started.elapsed() < Duration::from_secs(600), "the broker did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, and wait for the clean shutdown (which writes the snapshot).
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
            assert!(status.success(), "kill -TERM");
            child.wait().expect("wait");
        }
    }

    /// CPU seconds (user and system) the broker used so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.child.as_ref().expect("running").id().to_string())
    }

    /// Waits until the broker is quiet (under 5 % of a core over half a second, for at most a
    /// minute): work a run left behind (the index's merges, seals and snapshots are deferred past the
    /// writes that caused them) is then counted against that run, not the next. Returns the CPU
    /// seconds the broker used meanwhile.
    fn wait_quiet(&self) -> f64 {
        let started = (Instant::now(), self.cpu_seconds());
        loop {
            let before = self.cpu_seconds();
            std::thread::sleep(Duration::from_millis(500));
            let used = self.cpu_seconds() - before;
            if used < 0.025 || started.0.elapsed() > Duration::from_secs(60) {
                return self.cpu_seconds() - started.1;
            }
        }
    }

    fn resident_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// A gauge or counter summed over its labels, from `GET /metrics`.
    fn metric(&self, name: &str) -> u64 {
        // The metrics listener may come up a moment after the Kafka listener the start waited for.
        let started = Instant::now();
        let mut stream = loop {
            match TcpStream::connect(("127.0.0.1", self.metrics_port)) {
                Ok(stream) => break stream,
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("metrics: {error}"),
            }
        };
        // HTTP/1.1 keeps the connection open unless asked not to: read_to_string would wait forever.
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.metrics_port);
        stream.write_all(request.as_bytes()).expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .filter_map(|line| line.rsplit(' ').next().and_then(|value| value.parse::<u64>().ok()))
            .sum()
    }

    /// The last "dedup index rebuilt" line of the log.
    fn last_rebuild_line(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().find(|line| line.contains("dedup index rebuilt")).unwrap_or_default().to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU seconds (user and system) process `pid` (or "self") used so far, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // utime and stime are the 12th and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn once(args: &Args, command: &[&str]) {
    let status = Command::new(&args.once).args(command).stdout(Stdio::null()).status().expect("run once");
    assert!(status.success(), "once {command:?} failed");
}

fn create_topic(args: &Args, broker: &Broker, name: &str, dedup: bool) {
    let partitions = args.partitions.to_string();
    let bootstrap = broker.bootstrap();
    let mut command = vec!["topic", "create", name, "--partitions", &partitions, "--bootstrap", &bootstrap];
    if dedup {
        command.extend(["--config", "dedup.source=header:msg-id", "--config", "dedup.window.ms=-1"]);
    }
    once(args, &command);
}

/// Sends `count` records with ids `prefix-0..count` from `producers` clients; returns records/s.
fn produce(args: &Args, bootstrap: &str, topic: &str, prefix: &str, count: u64) -> f64 {
    let producers = args.producers;
    let clients: Vec<ThreadedProducer<DefaultProducerContext>> = (0..producers)
        .map(|_| {
            once_cli::clients::client_config(bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("compression.type", &args.compression)
                .set("queue.buffering.max.messages", "200000")
                .set("message.timeout.ms", "300000")
                .create()
                .expect("producer")
        })
        .collect();
    let value = vec![b'v'; args.value_bytes];
    let started = Instant::now();
    let sent: Vec<std::sync::atomic::AtomicU64> = (0..producers).map(|_| Default::default()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let elapsed = std::thread::scope(|scope| {
        if args.timeline {
            let (clients, sent, done) = (&clients, &sent, &done);
            scope.spawn(move || {
                let mut line = Vec::new();
                let mut last = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let acknowledged: u64 = clients
                        .iter()
                        .zip(sent)
                        .map(|(client, sent)| {
                            sent.load(std::sync::atomic::Ordering::Relaxed)
                                .saturating_sub(client.in_flight_count() as u64)
                        })
                        .sum();
                    line.push(format!("{}", (acknowledged - last.min(acknowledged)) / 1000));
                    last = acknowledged;
                }
                let unix =
                    || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
                println!("  k records acknowledged per 250 ms (ended at {:.3}): {}", unix(), line.join(" "));
            });
        }
        let workers: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(index, client)| {
                let value = &value;
                let sent = &sent;
                scope.spawn(move || {
                    let share = count / producers;
                    let first = index as u64 * share;
                    let last = if index as u64 == producers - 1 { count } else { first + share };
                    for number in first..last {
                        let id = format!("{prefix}-{number:010}");
                        let headers = OwnedHeaders::new().insert(Header { key: "msg-id", value: Some(&id) });
                        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(value).headers(headers);
                        loop {
                            match client.send(record) {
                                Ok(()) => {
                                    sent[index].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    break;
                                }
                                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                                    record = returned;
                                    client.poll(Duration::from_millis(1));
                                }
                                Err((error, _)) => panic!("send: {error}"),
                            }
                        }
                    }
                    client.flush(Duration::from_secs(600)).expect("every record acknowledged");
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("producer thread");
        }
        // Before the timeline's thread ends (it wakes every quarter second).
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        elapsed
    });
    count as f64 / elapsed.as_secs_f64()
}

/// Interleaved runs: a fresh dedup-off topic, then dedup on (a fresh topic, or `on_topic`), each
/// `throughput_records` new ids; prints each run and the medians. Each run starts with the broker
/// quiet ([`Broker::wait_quiet`]), and the CPU it used after a run until it was quiet again is that
/// run's too (the broker CPU per record figures).
fn throughput(args: &Args, broker: &Broker, phase: &str, on_topic: Option<&str>) {
    let bootstrap = broker.bootstrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    let (mut off_client_cpu, mut on_client_cpu) = (Vec::new(), Vec::new());
    let before_runs = broker.wait_quiet();
    println!("{phase}: the broker was quiet after {before_runs:.2} CPU s");
    for run in 0..args.runs {
        for dedup in [false, true] {
            let fresh = format!("{phase}-{}-{run}", if dedup { "on" } else { "off" });
            let topic = match (dedup, on_topic) {
                (true, Some(topic)) => topic.to_string(),
                _ => {
                    create_topic(args, broker, &fresh, dedup);
                    fresh.clone()
                }
            };
            let cpu_before = (broker.cpu_seconds(), cpu_seconds("self"));
            let rate = produce(args, &bootstrap, &topic, &format!("{phase}{run}"), args.throughput_records);
            let (broker_cpu, client_cpu) = (broker.cpu_seconds() - cpu_before.0, cpu_seconds("self") - cpu_before.1);
            if topic == fresh {
                once(args, &["topic", "delete", &topic, "--bootstrap", &bootstrap]);
            }
            let after = broker.wait_quiet();
            // Broker and clients share the machine: how much of it the run kept busy tells a run bound
            // by CPU (near every vCPU) from one that waits (on syncs, or on the writers' rounds).
            let seconds = args.throughput_records as f64 / rate;
            let busy = (broker_cpu + client_cpu) / seconds;
            println!(
                "{phase} run {run}: dedup {}: {rate:.0} records/s (CPU s: broker {broker_cpu:.2} + {after:.2} after the run until quiet, clients {client_cpu:.2}; {busy:.2} of {vcpus} vCPUs busy)",
                if dedup { "on " } else { "off" },
                vcpus = std::thread::available_parallelism().map_or(1, |count| count.get()),
            );
            let cpu_us_per_record = (broker_cpu + after) * 1e6 / args.throughput_records as f64;
            let client_us_per_record = client_cpu * 1e6 / args.throughput_records as f64;
            if dedup {
                on.push(rate);
                on_cpu.push(cpu_us_per_record);
                on_client_cpu.push(client_us_per_record);
            } else {
                off.push(rate);
                off_cpu.push(cpu_us_per_record);
                off_client_cpu.push(client_us_per_record);
            }
        }
    }
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on / off).collect();
    let (off_median, on_median) = (median(&mut off.clone()), median(&mut on.clone()));
    println!(
        "{phase} throughput: dedup off {off_median:.0} records/s, on {on_median:.0} records/s (medians of {}); on/off per run {:?}, median {:.2}",
        args.runs,
        ratios.iter().map(|ratio| format!("{ratio:.2}")).collect::<Vec<_>>(),
        median(&mut ratios.clone())
    );
    println!(
        "{phase} broker CPU per record, with what each run left until the broker was quiet (medians): dedup off {:.2} µs, on {:.2} µs",
        median(&mut off_cpu),
        median(&mut on_cpu)
    );
    println!(
        "{phase} client CPU per record (medians): dedup off {:.2} µs, on {:.2} µs",
        median(&mut off_client_cpu),
        median(&mut on_client_cpu)
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir).expect("data dir");
    let mut broker = Broker {
        args_once: args.once.clone(),
        data_dir: args.data_dir.join("data"),
        port: free_port(),
        metrics_port: free_port(),
        log: args.data_dir.join("broker.log"),
        child: None,
        extra_args: args
            .dedup_memory_bytes
            .map(|bytes| vec!["--dedup-memory-bytes".to_string(), bytes.to_string()])
            .unwrap_or_default(),
    };
    broker.start();
    println!(
        "dedup_broker_bench: {} partitions, {} producers, {}-byte values, compression {}, idempotent, acks=all, dedup memory {}",
        args.partitions,
        args.producers,
        args.value_bytes,
        args.compression,
        args.dedup_memory_bytes.map_or("default".to_string(), |bytes| format!("{bytes} bytes"))
    );

    // Throughput with an empty index, interleaved: off, on, off, on, ... each on a fresh topic.
    if !args.skip_fresh {
        throughput(&args, &broker, "fresh", None);
    }

    // Memory: the resident set before and after filling one dedup topic with `ids` live ids.
    create_topic(&args, &broker, "live", true);
    std::thread::sleep(Duration::from_secs(2));
    let before = broker.resident_bytes();
    let started = Instant::now();
    let rate = produce(&args, &broker.bootstrap(), "live", "live", args.ids);
    println!("filled {} ids in {:.1} s ({rate:.0} records/s)", args.ids, started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(args.settle_seconds)); // upkeep: merges settle
    let after = broker.resident_bytes();
    let index_bytes = broker.metric("once_dedup_index_bytes");
    let stored = broker.metric("once_dedup_index_ids");
    println!(
        "memory: resident {:.0} MB -> {:.0} MB: {:.1} bytes per live id by resident set growth; index {:.1} bytes per id by its own count ({stored} ids)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        (after.saturating_sub(before)) as f64 / args.ids as f64,
        index_bytes as f64 / stored.max(1) as f64,
    );
    print_index(&broker);

    // kill -9, restart: time until the broker serves, with the snapshot the broker kept.
    broker.kill9();
    let serving = broker.start();
    println!("restart after kill -9 (snapshot + log tail): serving after {:.2} s", serving.as_secs_f64());
    println!("  {}", broker.last_rebuild_line());
    println!("  resident after the restart: {:.0} MB", broker.resident_bytes() as f64 / 1e6);
    print_index(&broker);
    // And without a snapshot: the whole log replayed.
    broker.kill9();
    let snapshot = broker.data_dir.join("topics").join("live").join("dedup.snapshot");
    std::fs::remove_file(&snapshot).expect("remove the snapshot");
    let serving = broker.start();
    println!("restart after kill -9 without a snapshot (whole log): serving after {:.2} s", serving.as_secs_f64());
    println!("  {}", broker.last_rebuild_line());
    print_index(&broker);
    // A clean restart for comparison: no log recovery, the snapshot covers everything.
    broker.terminate();
    let serving = broker.start();
    println!("restart after a clean shutdown: serving after {:.2} s", serving.as_secs_f64());
    println!("  {}", broker.last_rebuild_line());

    // Throughput against the full index: new ids into `live` (looked up among its ids), interleaved
    // with fresh dedup-off topics.
    throughput(&args, &broker, "loaded", Some("live"));
    // Duplicates: the oldest ids again (on disk when the budget is below the index), all dropped.
    let rate = produce(&args, &broker.bootstrap(), "live", "live", args.throughput_records);
    println!("resending {} of the oldest ids (all duplicates): {rate:.0} records/s", args.throughput_records);
    print_index(&broker);

    // kill -9 while producers write new ids: the tail since the last snapshot is what the writes left
    // there (the kills above come after the upkeep had seconds to catch up). The producers carry on
    // against the restarted broker (their retries are duplicates, dropped by the index).
    let bootstrap = broker.bootstrap();
    std::thread::scope(|scope| {
        let writing = scope.spawn(|| produce(&args, &bootstrap, "live", "tail", args.throughput_records * 3));
        std::thread::sleep(Duration::from_secs(3));
        broker.kill9();
        let serving = broker.start();
        println!("restart after kill -9 while producers write new ids: serving after {:.2} s", serving.as_secs_f64());
        println!("  {}", broker.last_rebuild_line());
        writing.join().expect("the producers finish against the restarted broker");
    });
    print_index(&broker);
    broker.kill9();
}

/// The index's own figures, from the metrics.
fn print_index(broker: &Broker) {
    let stored = broker.metric("once_dedup_index_ids").max(1);
    let bytes = broker.metric("once_dedup_index_bytes");
    let disk_ids = broker.metric("once_dedup_index_disk_ids");
    println!(
        "  index: {stored} ids, {disk_ids} on disk in {} chunk files, {:.1} MB in RAM = {:.2} bytes per id (budget {} bytes); chunks on disk hold {:.2} bytes of RAM per id on disk",
        broker.metric("once_dedup_index_disk_chunks"),
        bytes as f64 / 1e6,
        bytes as f64 / stored as f64,
        broker.metric("once_dedup_index_memory_budget_bytes"),
        broker.metric("once_dedup_index_disk_chunk_bytes") as f64 / disk_ids.max(1) as f64,
    );
}
