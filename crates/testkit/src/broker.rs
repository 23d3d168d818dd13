//! The test binary's RabbitMQ node: [`BrokerNode`] (from `till_events::broker::node`),
//! started on first use and kept until the process exits. `.ci/run` installs
//! `rabbitmq-server`.

use std::sync::OnceLock;

pub use till_events::broker::node::BrokerNode;

struct SharedBroker {
    url: String,
}

static SHARED: OnceLock<Result<SharedBroker, String>> = OnceLock::new();

/// The test binary's shared node, started on first use on a thread of its own (so it
/// outlives every test's runtime) and stopped when the process exits. Tests that stop a
/// broker start their own [`BrokerNode`] instead.
pub fn shared_broker_url() -> anyhow::Result<String> {
    let shared = SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("till-test-rabbitmq".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = sender.send(Err(format!("building the broker runtime: {error}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match BrokerNode::start().await {
                    Ok(node) => {
                        let _ = sender.send(Ok(SharedBroker { url: node.url() }));
                        let _node = node;
                        std::future::pending::<()>().await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(format!("{error:#}")));
                    }
                }
            });
        });
        match spawned {
            Ok(_) => receiver.recv().unwrap_or_else(|_| Err("the broker thread died".into())),
            Err(error) => Err(format!("spawning the broker thread: {error}")),
        }
    });
    shared.as_ref().map(|shared| shared.url.clone()).map_err(|error| anyhow::anyhow!("test broker: {error}"))
}
