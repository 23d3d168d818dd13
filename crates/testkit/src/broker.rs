//! The test binary's RabbitMQ node: [`BrokerNode`] (from `till_events::broker::node`),
//! started on first use and kept until the process exits. `.ci/run` installs
//! `rabbitmq-server`.

use std::sync::OnceLock;

pub use till_events::broker::node::BrokerNode;

static SHARED: OnceLock<Result<String, String>> = OnceLock::new();

/// The URL of the test binary's shared node. Tests that stop a broker start their own
/// [`BrokerNode`] instead.
pub fn shared_broker_url() -> anyhow::Result<String> {
    let shared = SHARED.get_or_init(|| {
        crate::hold_on_own_thread("till-test-rabbitmq", || async {
            let node = BrokerNode::start().await?;
            let url = node.url();
            Ok((node, url))
        })
    });
    shared.clone().map_err(|error| anyhow::anyhow!("test broker: {error}"))
}
