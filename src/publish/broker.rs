//! The embedded MQTT broker: rumqttd inside the daemon, for machines without a broker.
//!
//! It serves MQTT 3.1.1 over plain TCP on the configured address only, keeps
//! retained messages and last wills in memory, and runs until the process
//! exits: rumqttd 0.20 has no way to stop a broker it started.
//!
//! rumqttd reports through `tracing`, and at error level for routine events
//! such as a client disconnecting. Its events are therefore passed on to the
//! `log` facade at debug level, under their own targets
//! (`RUST_LOG=rumqttd=debug` shows them), and its spans are dropped.
//!
//! The broker is built only with the cargo feature `embedded-broker`, which is
//! on by default. rumqttd also brings in an HTTP server (axum, hyper) and a
//! Prometheus exporter that edgedet never starts, so leaving the feature out
//! makes the binary smaller. Such a build rejects `mqtt.embedded_broker = true`
//! when it reads the config, as a config error naming the key. For library
//! users who build a config in code, [`start_embedded_broker`] still returns
//! [`PublishError::BrokerNotBuilt`] rather than running a daemon with no broker
//! to publish to.

use std::net::SocketAddr;

#[cfg(not(feature = "embedded-broker"))]
use super::PublishError;
#[cfg(not(feature = "embedded-broker"))]
use crate::config::MqttConfig;

#[cfg(feature = "embedded-broker")]
pub use server::start_embedded_broker;

/// A running embedded broker. Dropping it does not stop the broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    address: SocketAddr,
}

impl EmbeddedBroker {
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Returns [`PublishError::BrokerNotBuilt`]: this build has no broker to start.
///
/// # Errors
/// Always, because edgedet was built without the cargo feature `embedded-broker`.
#[cfg(not(feature = "embedded-broker"))]
pub fn start_embedded_broker(_config: &MqttConfig) -> Result<EmbeddedBroker, PublishError> {
    Err(PublishError::BrokerNotBuilt)
}

#[cfg(feature = "embedded-broker")]
mod server {
    use std::collections::HashMap;
    use std::fmt::{self, Write as _};
    use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    use log::info;
    use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

    use super::EmbeddedBroker;
    use crate::config::MqttConfig;
    use crate::publish::mqtt::MAX_PACKET_BYTES;
    use crate::publish::PublishError;

    /// How long to wait for the broker to accept connections after starting it.
    const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

    /// rumqttd keeps each topic's recent messages in memory segments and drops
    /// the oldest segment when there are more than the count, so these bound the
    /// memory per topic to about 4 MiB.
    const SEGMENT_BYTES: usize = 1024 * 1024;
    const SEGMENT_COUNT: usize = 4;

    /// Clients the embedded broker accepts at once.
    const MAX_CONNECTIONS: usize = 64;

    /// Messages in flight to one subscriber before the broker waits for acknowledgements.
    const MAX_INFLIGHT: usize = 100;

    /// Starts rumqttd on `config.host:config.port` and waits until it accepts connections.
    /// With credentials in the config, the broker accepts only those.
    ///
    /// # Errors
    /// [`PublishError::BrokerAddress`] when the host is not an IP address,
    /// [`PublishError::BrokerBind`] when the address is in use or not local, and
    /// [`PublishError::BrokerStart`] when the broker does not come up.
    pub fn start_embedded_broker(config: &MqttConfig) -> Result<EmbeddedBroker, PublishError> {
        let ip: IpAddr = config.host.parse().map_err(|_| PublishError::BrokerAddress { host: config.host.clone() })?;
        let address = SocketAddr::new(ip, config.port);

        // rumqttd only logs a failed bind from its server thread, so find out here
        // first, while the error can still be returned.
        drop(TcpListener::bind(address).map_err(|source| PublishError::BrokerBind { address, source })?);

        // Fails when a subscriber is already set, which then receives the events instead.
        let _ = tracing::subscriber::set_global_default(DebugLogBridge);

        let mut broker = Broker::new(broker_config(config, address));
        let server = thread::Builder::new()
            .name("mqtt-broker".to_string())
            .spawn(move || {
                if let Err(error) = broker.start() {
                    log::error!("embedded MQTT broker on {address} stopped: {error}");
                }
            })
            .map_err(PublishError::Thread)?;

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if server.is_finished() || Instant::now() >= deadline {
                return Err(PublishError::BrokerStart { address });
            }
            thread::sleep(Duration::from_millis(20));
        }

        let login = if config.credentials.is_some() { "with username and password" } else { "without authentication" };
        info!("embedded MQTT broker (rumqttd) listening on {address}, {login}");
        Ok(EmbeddedBroker { address })
    }

    fn broker_config(config: &MqttConfig, address: SocketAddr) -> rumqttd::Config {
        let auth = config
            .credentials
            .as_ref()
            .map(|credentials| HashMap::from([(credentials.username.clone(), credentials.password.clone())]));
        let server = ServerSettings {
            name: "edgedet".to_string(),
            listen: address,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: MAX_PACKET_BYTES,
                max_inflight_count: MAX_INFLIGHT,
                auth,
                external_auth: None,
                dynamic_filters: true,
            },
        };

        rumqttd::Config {
            id: 0,
            router: RouterConfig {
                max_connections: MAX_CONNECTIONS,
                max_outgoing_packet_count: MAX_INFLIGHT as u64,
                max_segment_size: SEGMENT_BYTES,
                max_segment_count: SEGMENT_COUNT,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("edgedet".to_string(), server)])),
            ..rumqttd::Config::default()
        }
    }

    /// A `tracing` subscriber that forwards events to `log` at debug level and ignores spans.
    struct DebugLogBridge;

    impl tracing::Subscriber for DebugLogBridge {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            metadata.is_event() && log::log_enabled!(target: metadata.target(), log::Level::Debug)
        }

        fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            // Spans are never recorded, so they can all share one id.
            tracing::span::Id::from_u64(1)
        }

        fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

        fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = FieldText::default();
            event.record(&mut fields);
            log::debug!(target: event.metadata().target(), "{}{}", fields.message, fields.others);
        }

        fn enter(&self, _span: &tracing::span::Id) {}

        fn exit(&self, _span: &tracing::span::Id) {}
    }

    /// An event's `message` field, and its other fields as ` name=value` pairs.
    #[derive(Default)]
    struct FieldText {
        message: String,
        others: String,
    }

    impl tracing::field::Visit for FieldText {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                let _ = write!(self.others, " {}={value:?}", field.name());
            }
        }
    }
}

#[cfg(all(test, not(feature = "embedded-broker")))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Qos;

    #[test]
    fn broker_left_out_of_build_is_an_error() {
        let config = MqttConfig {
            host: "127.0.0.1".to_string(),
            port: 1883,
            embedded_broker: true,
            client_id: "edgedet-test".to_string(),
            credentials: None,
            qos: Qos::AtLeastOnce,
            keep_alive: Some(Duration::from_secs(30)),
            topic_prefix: "edgedet".to_string(),
            stats_interval: None,
            max_queued: 10,
            reconnect_max: Duration::from_secs(30),
        };

        let error = start_embedded_broker(&config).expect_err("a build without the broker cannot start one");

        assert!(matches!(error, PublishError::BrokerNotBuilt), "unexpected error {error:?}");
        assert_eq!(
            error.to_string(),
            "this edgedet was built without the embedded broker (cargo feature embedded-broker): \
             set mqtt.embedded_broker = false and point mqtt.host at an MQTT broker, or rebuild edgedet with that feature"
        );
    }
}
