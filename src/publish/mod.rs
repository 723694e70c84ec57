//! Publishing over MQTT: topic names, JSON payloads, the connection thread
//! and the optional embedded broker.
//!
//! Every topic is under `<prefix>/<device>/`:
//!
//! | topic | payload | retained |
//! | --- | --- | --- |
//! | `status` | `online`, or `offline` on clean shutdown and as last will | yes |
//! | `stats` | [`payload::StatsPayload`] every stats interval | no |
//! | `<camera>/status` | `online` while the camera runs, then `offline` | yes |
//! | `<camera>/detections` | [`payload::DetectionsPayload`] per processed frame | no |
//!
//! A camera's `offline` is published when its source ends or the daemon
//! stops cleanly. After a crash or SIGKILL only the device status turns
//! `offline` (an MQTT client has one last will), so subscribers should treat
//! the device status as overriding its cameras' statuses.
//!
//! This module does not decide what to publish or when; the daemon does.

pub mod broker;
pub mod mqtt;
pub mod payload;
pub mod topics;

use std::net::SocketAddr;

pub use broker::{start_embedded_broker, EmbeddedBroker};
pub use mqtt::{MqttLink, Publisher};
pub use topics::Topics;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("starting a thread")]
    Thread(#[source] std::io::Error),
    #[error("the embedded broker needs an IP address to listen on, but mqtt.host is {host:?}")]
    BrokerAddress { host: String },
    #[error("the embedded broker cannot listen on {address}")]
    BrokerBind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the embedded broker did not accept connections on {address} within 5 s")]
    BrokerStart { address: SocketAddr },
    /// `mqtt.embedded_broker = true` in a build without the cargo feature `embedded-broker`.
    #[error(
        "this edgedet was built without the embedded broker (cargo feature embedded-broker): \
         set mqtt.embedded_broker = false and point mqtt.host at an MQTT broker, or rebuild edgedet with that feature"
    )]
    BrokerNotBuilt,
}
