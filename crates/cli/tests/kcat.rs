//! kcat (Debian's, with its own older librdkafka) produces with keys and headers under each
//! compression type and consumes everything back from the shell.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::{once, BrokerProcess};

fn kcat_available() -> bool {
    Command::new("kcat").arg("-V").output().is_ok_and(|output| output.status.success())
}

fn kcat_roundtrip(broker: &BrokerProcess, compression: &str, records: usize) {
    let bootstrap = broker.bootstrap();
    let topic = format!("kcat-{compression}");
    once(&["topic", "create", &topic, "--partitions", "3", "--bootstrap", &bootstrap]);
    let input: String = (0..records)
        .map(|number| format!("key-{}:value-{number}-{}\n", number % 97, "x".repeat(number % 50)))
        .collect();
    let mut producer = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", &topic, "-K:", "-H", "origin=kcat", "-z", compression, "-X", "acks=all"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn kcat -P");
    producer.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to kcat");
    let status = producer.wait().expect("kcat -P");
    assert!(status.success(), "kcat -P failed with {status}");

    let output = Command::new("kcat")
        .args(["-C", "-b", &bootstrap, "-t", &topic, "-e", "-q", "-f", "%p|%o|%k|%h|%s\n"])
        .output()
        .expect("kcat -C");
    assert!(output.status.success(), "kcat -C failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), records, "kcat reads back every record");
    // Each key lives in one partition; within it, records of that key come back in the order sent.
    let mut partition_of_key: HashMap<String, String> = HashMap::new();
    let mut next_number_of_key: HashMap<String, usize> = HashMap::new();
    let mut offsets: HashMap<String, i64> = HashMap::new();
    for line in lines {
        let mut fields = line.splitn(5, '|');
        let (partition, offset, key, headers, value) = (
            fields.next().expect("partition").to_string(),
            fields.next().expect("offset").parse::<i64>().expect("offset number"),
            fields.next().expect("key").to_string(),
            fields.next().expect("headers"),
            fields.next().expect("value"),
        );
        assert_eq!(headers, "origin=kcat", "header survives");
        let expected_offset = offsets.entry(partition.clone()).or_insert(0);
        assert_eq!(offset, *expected_offset, "dense offsets in partition {partition}");
        *expected_offset += 1;
        assert_eq!(
            partition_of_key.entry(key.clone()).or_insert_with(|| partition.clone()),
            &partition,
            "key {key} stays in one partition"
        );
        let key_number: usize = key.trim_start_matches("key-").parse().expect("key number");
        let number = next_number_of_key.entry(key.clone()).or_insert(key_number);
        assert_eq!(value, format!("value-{}-{}", *number, "x".repeat(*number % 50)), "record order of key {key}");
        *number += 97;
    }
}

#[test]
fn kcat_produces_and_consumes_with_every_compression() {
    assert!(kcat_available(), "kcat must be installed (.ci/run installs it)");
    let broker = BrokerProcess::start(&[]);
    kcat_roundtrip(&broker, "none", 100_000);
    for compression in ["gzip", "snappy", "lz4", "zstd"] {
        kcat_roundtrip(&broker, compression, 20_000);
    }
}
