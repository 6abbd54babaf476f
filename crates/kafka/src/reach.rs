//! A first look at the brokers, before a run touches any output: a wrong
//! address or a cluster that is down is reported with the address and
//! librdkafka's reason (`Connection refused`, a name that does not
//! resolve), as soon as every broker is known to be down, while the outputs
//! of the last run are still whole.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaError;

/// How long the brokers get to answer at most (librdkafka's own request
/// timeout elsewhere in this crate).
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// What librdkafka reports while a probe waits for the brokers.
#[derive(Default)]
struct ProbeContext {
    /// The first report that says why a broker cannot be reached.
    cause: Mutex<Option<String>>,
    /// Set once librdkafka says that every broker is down.
    all_down: AtomicBool,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_down.store(true, Ordering::Release);
        } else if let Ok(mut cause) = self.cause.lock()
            && cause.is_none()
        {
            *cause = Some(reason.to_string());
        }
    }

    // Kept out of the log: what matters is in the error `reach_brokers` returns.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ConsumerContext for ProbeContext {}

/// Checks that the brokers at `brokers` answer a metadata request; the
/// error names the addresses and, when librdkafka says it, why not.
/// `properties` are the client's extra settings (security, for one).
pub fn reach_brokers(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<(), KafkaError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer<ProbeContext> = client
        .create_with_context(ProbeContext::default())
        .map_err(|e| KafkaError {
            what: format!("connecting to the brokers {brokers}"),
            message: e.to_string(),
        })?;
    let deadline = Instant::now() + REACH_TIMEOUT;
    loop {
        let error = match consumer.fetch_metadata(None, Duration::from_millis(250)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // Errors reach the context from the client's queue.
        let _ = consumer.poll(Duration::ZERO);
        let context = consumer.context();
        if context.all_down.load(Ordering::Acquire) || Instant::now() >= deadline {
            let cause = context
                .cause
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or_else(|| error.to_string());
            return Err(KafkaError {
                what: format!("reaching the brokers {brokers}"),
                message: format!(
                    "no broker answered ({cause}); check the address and that the cluster is up"
                ),
            });
        }
    }
}
