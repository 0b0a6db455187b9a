//! The metrics operators' dashboards rely on (issue 20's fixed names), against a real `once serve`
//! and real clients: `once_fsync_seconds` counts the syncs of acknowledged writes;
//! `once_partition_lso_lag` and `once_transactions_open` show a transaction left open, and drop to
//! 0 when it commits; `once_consumer_group_lag` is the high watermark less the group's committed
//! offset, per partition.

mod support;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use support::txn::{send, transactional_producer};
use support::{free_port, once, produce_lines, wait_until, BrokerProcess};

fn metrics(address: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(&format!("http://{address}/metrics")).call().expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    response.body_mut().read_to_string().expect("body")
}

/// The value of the sample whose name and labels are exactly `sample`.
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn fsync_lso_lag_open_transactions_and_group_lag_are_exported() {
    let http = format!("127.0.0.1:{}", free_port());
    let broker = BrokerProcess::start(&["--http-listen", &http]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "orders", "--partitions", "2", "--bootstrap", &bootstrap]);
    once(&["topic", "create", "payments", "--partitions", "1", "--bootstrap", &bootstrap]);
    let before = value(&metrics(&http), "once_fsync_seconds_count").expect("the fsync histogram");
    produce_lines(&broker, "payments", "p1\np2\np3\np4\np5\n");

    let text = metrics(&http);
    assert!(text.contains("# TYPE once_fsync_seconds histogram"), "{text}");
    let after = value(&text, "once_fsync_seconds_count").expect("count");
    assert!(after > before, "acknowledged writes were fsynced: {before} → {after}");
    assert!(value(&text, "once_fsync_seconds_sum").expect("sum") > 0.0);
    let infinite = value(&text, "once_fsync_seconds_bucket{le=\"+Inf\"}").expect("+Inf bucket");
    assert_eq!(infinite, after, "the +Inf bucket holds every observation");
    assert_eq!(value(&text, "once_transactions_open"), Some(0.0));
    // Group commit: the produce batch was answered by a sync round, and syncs made its bytes durable.
    let rounds = value(&text, "once_group_commit_batches_count").expect("group-commit sizes");
    assert!(rounds >= 1.0, "{text}");
    assert!(value(&text, "once_group_commit_batches_sum").expect("writes answered") >= rounds, "{text}");
    assert!(value(&text, "once_fsync_bytes_count").expect("bytes per sync") >= 1.0, "{text}");
    assert!(value(&text, "once_fsync_bytes_sum").expect("bytes synced") > 5.0 * 2.0, "{text}");
    // Requests per API: the CreateTopics and the Produce requests were timed.
    assert!(text.contains("# TYPE once_request_seconds histogram"), "{text}");
    let produces = value(&text, "once_request_seconds_count{api=\"Produce\"}").expect("Produce timed");
    assert!(produces >= 1.0, "{text}");
    assert_eq!(value(&text, "once_request_seconds_count{api=\"CreateTopics\"}"), Some(2.0), "{text}");
    assert!(value(&text, "once_connections_accepted_total").expect("connections accepted") >= 3.0, "{text}");
    assert!(
        value(&text, "once_connections").is_some() && value(&text, "once_authorization_denials_total") == Some(0.0)
    );

    // A transaction left open on orders/0: three records the LSO holds back.
    let txn = transactional_producer(&bootstrap, "metrics-txn", 60_000);
    txn.begin_transaction().expect("begin");
    for record in ["o1", "o2", "o3"] {
        send(&txn, "orders", 0, record);
    }
    txn.flush(Duration::from_secs(30)).expect("stored");
    let lso = "once_partition_lso_lag{topic=\"orders\",partition=\"0\"}";
    let text = metrics(&http);
    assert_eq!(value(&text, lso), Some(3.0), "{text}");
    assert_eq!(value(&text, "once_partition_lso_lag{topic=\"orders\",partition=\"1\"}"), Some(0.0));
    assert_eq!(value(&text, "once_transactions_open"), Some(1.0));

    // A group that committed offset 1 of payments' 5 records lags by 4.
    let consumer: BaseConsumer = once_cli::clients::client_config(&bootstrap)
        .set("group.id", "billing")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("payments", 0, Offset::Offset(1)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    let lag = "once_consumer_group_lag{group=\"billing\",topic=\"payments\",partition=\"0\"}";
    assert_eq!(value(&metrics(&http), lag), Some(4.0));

    // Committed: nothing held back, nothing open; the group's lag follows its commits.
    txn.commit_transaction(Duration::from_secs(30)).expect("commit");
    wait_until("the transaction's markers to be written", Duration::from_secs(10), || {
        let text = metrics(&http);
        value(&text, lso) == Some(0.0) && value(&text, "once_transactions_open") == Some(0.0)
    });
    offsets.set_partition_offset("payments", 0, Offset::Offset(5)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    let text = metrics(&http);
    assert_eq!(value(&text, lag), Some(0.0));
    // Completed transactions are counted; traffic per topic: payments' five records (one line per
    // record), orders' three, and what a consumer read back.
    assert_eq!(value(&text, "once_transactions_committed_total"), Some(1.0), "{text}");
    assert_eq!(value(&text, "once_transactions_aborted_total"), Some(0.0), "{text}");
    assert_eq!(value(&text, "once_topic_produced_records_total{topic=\"payments\"}"), Some(5.0), "{text}");
    assert_eq!(value(&text, "once_topic_produced_records_total{topic=\"orders\"}"), Some(3.0), "{text}");
    let produced = value(&text, "once_topic_produced_bytes_total{topic=\"payments\"}").expect("bytes in");
    assert!(produced > 5.0 * 2.0, "at least the values' bytes: {produced}");
    assert_eq!(value(&text, "once_topic_fetched_bytes_total{topic=\"payments\"}"), Some(0.0), "nothing read yet");
    let read = once(&["consume", "payments", "--from-beginning", "--max-messages", "5", "--bootstrap", &bootstrap]);
    assert_eq!(read.lines().count(), 5, "{read}");
    let fetched = value(&metrics(&http), "once_topic_fetched_bytes_total{topic=\"payments\"}").expect("bytes out");
    assert!(fetched >= produced, "the consumer read every batch at least once: {fetched} of {produced}");
    dashboard_and_docs_name_only_exported_metrics(&http, &bootstrap);
}

/// Every `once_…` name in `text` with its sample suffix taken off: the family its `# TYPE` line names.
fn families_named(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (start, _) in text.match_indices("once_") {
        let preceded_by_word = text[..start].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded_by_word {
            continue;
        }
        let name: String = text[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        let name = name.trim_end_matches('_');
        let family =
            ["_total", "_bucket", "_count", "_sum"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name);
        // A bare `once_…` in prose names no metric.
        if family.len() > "once_".len() {
            names.insert(family.to_string());
        }
    }
    names
}

/// The Grafana dashboard and docs/metrics.md name only metrics the broker at `http` exports: each
/// of their names is a family in a live scrape (a renamed metric breaks this test, not an operator's
/// dashboard), and every exported family is documented. (Part of the test above: one broker, so
/// no two tests of this file race for ports.)
fn dashboard_and_docs_name_only_exported_metrics(http: &str, bootstrap: &str) {
    // A deduplicating topic, so its index families are exported too.
    once(&["topic", "create", "ids", "--config", "dedup.source=key", "--bootstrap", bootstrap]);
    let text = metrics(http);
    let exported: std::collections::BTreeSet<String> =
        text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_string)).collect();
    assert!(exported.len() > 30, "{text}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for document in ["docs/grafana/once.json", "docs/metrics.md"] {
        let contents = std::fs::read_to_string(root.join(document)).expect(document);
        let named = families_named(&contents);
        assert!(named.len() > 20, "{document} names the metrics: {named:?}");
        let unknown: Vec<&String> = named.iter().filter(|name| !exported.contains(*name)).collect();
        assert!(unknown.is_empty(), "{document} names metrics the broker does not export: {unknown:?}");
    }
    let documented = families_named(&std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs"));
    let undocumented: Vec<&String> = exported.iter().filter(|name| !documented.contains(*name)).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
}
