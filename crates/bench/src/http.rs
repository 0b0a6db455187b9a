//! HTTP produce: POSTs per second to a broker's `--http-listen` (the REST Proxy v3 records
//! endpoint, crates/http), `--producers` clients each with one keep-alive connection and one
//! request in flight, with an `Idempotency-Key` per record (a `dedup.source=header:id` topic) and
//! without (a plain topic) — beside Kafka produce at the same concurrency (each producer one record
//! in flight, linger 0, acks=all), interleaved in the same run. Every answer is checked (200, an
//! offset), and after each keyed run a sample of keys is retried and must be answered with the
//! original offset, so a fast wrong answer cannot pass for a figure.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

use crate::produce::{self, Workload};
use crate::rows::{Measurement, Row};
use crate::{process, Plan};

/// One HTTP client: a keep-alive agent, answers checked.
struct Client {
    agent: ureq::Agent,
    url: String,
}

impl Client {
    fn new(http: &str, cluster_id: &str, topic: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Client { agent, url: format!("http://{http}/v3/clusters/{cluster_id}/topics/{topic}/records") }
    }

    /// POSTs one record; its offset and whether the answer was a replay.
    fn post(&self, key: Option<&str>, body: &str) -> anyhow::Result<(i64, bool)> {
        let mut request = self.agent.post(&self.url).header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let mut response = request.send(body).context("POST")?;
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let text = response.body_mut().read_to_string().context("reading the answer")?;
        anyhow::ensure!(status == 200, "POST answered {status}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).context("the answer is not JSON")?;
        let offset = answer["offset"].as_i64().context("the answer has no offset")?;
        anyhow::ensure!(offset >= 0, "a negative offset: {text}");
        Ok((offset, replayed))
    }
}

fn cluster_id(http: &str) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let text = agent.get(&format!("http://{http}/v3/clusters")).call()?.body_mut().read_to_string()?;
    let clusters: serde_json::Value = serde_json::from_str(&text)?;
    Ok(clusters["data"][0]["cluster_id"].as_str().context("no cluster id")?.to_string())
}

fn create_topic(plan: &Plan, topic: &str, dedup: bool) -> anyhow::Result<()> {
    let mut new_topic = NewTopic::new(topic, plan.args.partitions, TopicReplication::Fixed(-1));
    if dedup {
        new_topic = new_topic.set("dedup.source", "header:id");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin = produce::admin(plan)?;
    for result in produce::block_on(admin.create_topics([&new_topic], &options)).context("CreateTopics")? {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    Ok(())
}

/// What one client measured: its latencies (µs) and a sample of (key, offset) to retry.
type ClientRun = (Vec<u32>, Vec<(String, i64)>);

/// One run of POSTs: `plan.records` over `--producers` clients.
fn post_all(
    plan: &Plan,
    http: &str,
    cluster_id: &str,
    topic: &str,
    keyed: bool,
    run: &str,
) -> anyhow::Result<Measurement> {
    let clients = plan.args.producers.max(1);
    let value = "x".repeat(plan.args.record_bytes);
    let body = Arc::new(format!(r#"{{"value": {{"type": "STRING", "data": "{value}"}}}}"#));
    let start_line = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::with_capacity(clients);
    for index in 0..clients {
        let records = plan.records / clients as u64 + u64::from((index as u64) < plan.records % clients as u64);
        let (client, body, start_line) =
            (Client::new(http, cluster_id, topic), Arc::clone(&body), Arc::clone(&start_line));
        let run = run.to_string();
        threads.push(std::thread::spawn(move || -> anyhow::Result<ClientRun> {
            start_line.wait();
            let mut latencies = Vec::with_capacity(records as usize);
            let mut sample = Vec::new();
            for number in 0..records {
                let key = keyed.then(|| format!("{run}-{index}-{number}"));
                let sent = Instant::now();
                let (offset, replayed) = client.post(key.as_deref(), &body)?;
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                anyhow::ensure!(!replayed, "a new key answered as a replay");
                if let Some(key) = key.filter(|_| number % 97 == 0) {
                    sample.push((key, offset));
                }
            }
            Ok((latencies, sample))
        }));
    }
    start_line.wait();
    let started = Instant::now();
    let mut latencies_us = Vec::with_capacity(plan.records as usize);
    let mut sample = Vec::new();
    for thread in threads {
        let (latencies, keys) = thread.join().map_err(|_| anyhow::anyhow!("an HTTP client panicked"))??;
        latencies_us.extend(latencies);
        sample.extend(keys);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    // Outside the timing: retries of a sample of keys get their original offsets.
    let client = Client::new(http, cluster_id, topic);
    for (key, offset) in &sample {
        let (again, replayed) = client.post(Some(key), &body)?;
        anyhow::ensure!(
            replayed && again == *offset,
            "key {key}: retried, answered offset {again} (replayed {replayed}), first {offset}"
        );
    }
    Ok(Measurement {
        records: latencies_us.len() as u64,
        value_bytes: latencies_us.len() as u64 * plan.args.record_bytes as u64,
        elapsed,
        latencies_us,
        cost: None,
    })
}

/// The rows: HTTP with keys, HTTP without, Kafka idempotent and plain at the same concurrency.
pub fn run(plan: &Plan, run_id: u128) -> anyhow::Result<Vec<Row>> {
    let http = plan.args.http.clone().context("--workload http needs --http HOST:PORT (the broker's --http-listen)")?;
    let cluster_id = cluster_id(&http).with_context(|| format!("GET http://{http}/v3/clusters"))?;
    let mut kafka_plan = plan.clone();
    kafka_plan.args.in_flight = 1;
    kafka_plan.args.linger_ms = 0;
    let clients = plan.args.producers;
    let names = [
        (
            "HTTP POST, Idempotency-Key",
            format!("dedup.source=header:id; {clients} clients, keep-alive, 1 request in flight each"),
        ),
        ("HTTP POST, no key", format!("plain topic; {clients} clients, keep-alive, 1 request in flight each")),
        ("Kafka produce, idempotent", format!("{clients} producers, 1 record in flight each, linger 0")),
        ("Kafka produce, plain", format!("{clients} producers, 1 record in flight each, linger 0")),
    ];
    let mut measured: Vec<Vec<Measurement>> = vec![Vec::new(); names.len()];
    for index in 0..plan.runs {
        for (slot, (name, _)) in names.iter().enumerate() {
            let topic = format!("{}-{run_id}-http-{index}-{slot}", plan.args.topic_prefix);
            eprintln!("run {}/{}: {name}, {} clients", index + 1, plan.runs, plan.args.producers);
            let (measurement, cost) = process::measure(&plan.args.broker_pid, || match slot {
                0 | 1 => {
                    create_topic(plan, &topic, slot == 0)?;
                    post_all(plan, &http, &cluster_id, &topic, slot == 0, &format!("{run_id}-{index}"))
                }
                _ => {
                    let workload = if slot == 2 { Workload::Idempotent } else { Workload::Plain };
                    let outcome = produce::run(&kafka_plan, &topic, workload)?;
                    Ok(outcome.into_measurement(plan.args.record_bytes, None))
                }
            })?;
            eprintln!("  {} records in {:.2} s", measurement.records, measurement.elapsed.as_secs_f64());
            measured[slot].push(Measurement { cost, ..measurement });
        }
    }
    Ok(names
        .iter()
        .zip(measured)
        .map(|((name, setting), runs)| Row {
            workload: name.to_string(),
            system: "Once".to_string(),
            durability: "fdatasync before the answer".to_string(),
            record_bytes: plan.args.record_bytes,
            setting: setting.clone(),
            runs,
        })
        .collect())
}
