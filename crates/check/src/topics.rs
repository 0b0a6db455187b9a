//! Setting up a run over the admin API: its topics (with `dedup.source` when the broker takes it),
//! and a warning when clients would bypass the fault proxy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{dedup, queue};

pub(crate) fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        queue::client(bootstrap).create().context("creating an admin client")?;
    // -1: the broker's default replication factor (KIP-464).
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in block_on(admin.create_topics([&new_topic], &options)).context("CreateTopics")? {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    Ok(())
}

/// The `dedup` workload's topic, deduplicating by the producers' id header. A broker that refuses
/// `dedup.source` (any broker but Once: Kafka answers INVALID_CONFIG for an unknown config) gets the
/// topic without it, and a warning: the run then shows what its resends store. Returns the source
/// the topic has, if any: one the broker took but does not describe back counts as none.
pub(crate) fn create_dedup_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Option<String>> {
    let source = format!("header:{}", dedup::ID_HEADER);
    match create_topic(bootstrap, topic, partitions, &[("dedup.source", &source)]) {
        Ok(()) => {
            let described = described_config(bootstrap, topic, "dedup.source");
            if described.as_deref() == Some(source.as_str()) {
                return Ok(Some(source));
            }
            eprintln!(
                "once check: WARNING the broker took dedup.source={source} for {topic} but describes it as \
                 {described:?}: it does not deduplicate by message id; resends will be reported as duplicates"
            );
            Ok(None)
        }
        Err(error) => {
            eprintln!(
                "once check: WARNING the broker refused dedup.source={source} ({error:#}): it does not \
                 deduplicate by message id; creating {topic} without it, so resends will be reported as \
                 duplicates"
            );
            create_topic(bootstrap, topic, partitions, &[])?;
            Ok(None)
        }
    }
}

/// The value of topic config `name` as DescribeConfigs answers it (none if the broker does not).
fn described_config(bootstrap: &str, topic: &str, name: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = queue::client(bootstrap).create().ok()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options)).ok()?;
    let resource = results.into_iter().next()?.ok()?;
    resource.get(name)?.value.clone()
}

/// Clients bypass the proxy unless the broker advertises it: say so rather than check nothing.
pub(crate) fn warn_unless_advertised(proxy: &str) {
    let consumer: Result<BaseConsumer, _> = queue::client(proxy).create();
    let Ok(metadata) = consumer.and_then(|consumer| consumer.fetch_metadata(None, Duration::from_secs(10))) else {
        return;
    };
    let port = proxy.rsplit(':').next().unwrap_or_default();
    if !metadata.brokers().iter().all(|broker| broker.port().to_string() == port) {
        eprintln!(
            "once check: WARNING the broker does not advertise the proxy {proxy}; clients will bypass its faults"
        );
    }
}

/// Runs a future on this thread: the admin futures are resolved by librdkafka's own threads, so
/// parking until woken is all an executor needs to do (as in once-bench).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll as TaskPoll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = TaskContext::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            TaskPoll::Ready(output) => return output,
            TaskPoll::Pending => std::thread::park(),
        }
    }
}
