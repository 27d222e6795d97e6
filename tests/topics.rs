//! Kafka helpers shared by the integration tests and the Kafka benchmark:
//! unique names, topic creation, and how payments lines are routed to
//! partitions (by merchant).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// A topic or group name no other test (or earlier run) uses.
pub fn unique(hint: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "weir-{hint}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with `partitions` partitions on the broker at
/// `bootstrap`.
pub fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// The merchant field of a payments line (its second field).
pub fn merchant(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b',').nth(1).unwrap_or_default()
}

/// The partition of a merchant: FNV-1a of its name.
pub fn partition_of(merchant: &[u8], partitions: u32) -> u32 {
    let hash = merchant.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(partitions)) as u32
}
