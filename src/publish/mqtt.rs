//! The MQTT connection: a [`Publisher`] handle for the pipeline and the
//! [`MqttLink`] thread that polls rumqttc's event loop.
//!
//! # Queue bound and drops
//! Messages from the pipeline go into rumqttc's request channel, bounded to
//! `max_queued` messages, with `try_publish`, so publishing never blocks
//! detection. When the channel is full, as during a broker outage, the
//! message is dropped and counted. Messages that wait in the channel while
//! the broker is unreachable are sent once it connects. When an established
//! connection fails, rumqttc 0.25 (`EventLoop::clean`) moves the channel's
//! messages and the unacknowledged ones to its pending list, and discards
//! that list when the next session is a clean one. The link therefore
//! discards the list itself and counts those messages as dropped.
//!
//! # Statuses
//! Retained statuses do not go through the channel. [`Publisher::set_status`]
//! records the current status of each topic, and the link thread publishes
//! the changed ones by putting them in rumqttc's pending list, which is sent
//! before the channel. On every (re)connect it publishes all of them again,
//! so a broker that restarted without persistence learns them anew, and a
//! full channel can never hold back or reorder a status.
//!
//! # Reconnection
//! rumqttc reconnects on the next poll after an error. The link waits
//! between attempts, starting at [`INITIAL_BACKOFF`] and doubling up to the
//! configured maximum, and logs an outage once when it starts and once when
//! it ends, not on every attempt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rumqttc::{
    Client, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, RecvTimeoutError, Request,
};

use super::payload::{MqttStats, OFFLINE, ONLINE};
use super::topics::Topics;
use super::PublishError;
use crate::config::{MqttConfig, Qos};
use crate::daemon::Shutdown;

/// Maximum size of an MQTT packet that the daemon sends, in bytes. rumqttc's
/// default of 10 KiB is too small for a frame with many detections (about
/// 130 bytes each). A larger message is dropped and counted rather than
/// sent, because rumqttc would fail the whole connection on it.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Incoming packets are acknowledgements only, since the daemon subscribes to nothing.
const MAX_INCOMING_PACKET_BYTES: usize = 10 * 1024;

/// First wait before reconnecting after a failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// How long the connected link waits for network or queue activity before
/// it looks at statuses and shutdown again.
const POLL_TICK: Duration = Duration::from_millis(100);

/// Bytes of a PUBLISH packet besides topic and payload: fixed header (at
/// most 5), topic length (2) and packet id (2).
const PUBLISH_OVERHEAD_BYTES: usize = 9;

/// State shared by the publisher handles and the link thread.
#[derive(Debug, Default)]
struct Shared {
    statuses: Mutex<StatusBoard>,
    /// Messages written to the connection.
    published: AtomicU64,
    /// Messages discarded: channel full, too large, or lost with a connection.
    dropped: AtomicU64,
    /// Drops since the channel last accepted a message, for logging an episode once.
    dropping_since_accept: AtomicU64,
    oversize_reported: AtomicBool,
}

/// The latest retained status of every status topic, and a version that
/// changes with every update so the link thread can tell what is new.
#[derive(Debug, Default)]
struct StatusBoard {
    statuses: BTreeMap<String, &'static str>,
    version: u64,
}

/// A cheap, cloneable handle for publishing. Every method returns at once.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    shared: Arc<Shared>,
    qos: QoS,
}

impl Publisher {
    /// Queues a non-retained message with the configured QoS and returns whether it was queued.
    /// A message that does not fit in the queue or in [`MAX_PACKET_BYTES`] is dropped and counted.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        if topic.len() + payload.len() + PUBLISH_OVERHEAD_BYTES > MAX_PACKET_BYTES {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.shared.oversize_reported.swap(true, Ordering::Relaxed) {
                warn!(
                    "dropping a {} byte message to {topic}: larger than the {MAX_PACKET_BYTES} byte MQTT packet limit (later ones are only counted)",
                    payload.len()
                );
            }
            return false;
        }

        match self.client.try_publish(topic, self.qos, false, payload) {
            Ok(()) => {
                let dropped = self.shared.dropping_since_accept.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    info!("MQTT queue accepts messages again after dropping {dropped}");
                }
                true
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if self.shared.dropping_since_accept.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!("MQTT queue is full: dropping messages until the broker connection catches up");
                }
                false
            }
        }
    }

    /// Records the retained status of `topic`. The link thread publishes it
    /// within [`POLL_TICK`] when connected, or on the next connect.
    pub fn set_status(&self, topic: &str, online: bool) {
        let mut board = self.shared.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        board.statuses.insert(topic.to_string(), if online { ONLINE } else { OFFLINE });
        board.version += 1;
    }

    /// Message counters since the link started.
    pub fn stats(&self) -> MqttStats {
        MqttStats {
            published: self.shared.published.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The thread that owns rumqttc's event loop. Stop it with [`MqttLink::shutdown`].
pub struct MqttLink {
    publisher: Publisher,
    device_status: String,
    stop: Shutdown,
    finished: mpsc::Receiver<()>,
}

impl MqttLink {
    /// Starts the connection thread. The daemon's retained `online` status is
    /// published once connected. An unreachable broker is retried in the
    /// background, so this succeeds without a broker.
    ///
    /// # Errors
    /// [`PublishError::Thread`] when the thread cannot be started.
    pub fn start(config: &MqttConfig, topics: &Topics) -> Result<MqttLink, PublishError> {
        let device_status = topics.device_status();
        let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options
            .set_keep_alive(config.keep_alive.unwrap_or(Duration::ZERO))
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(device_status.clone(), OFFLINE, QoS::AtLeastOnce, true));
        if let Some(credentials) = &config.credentials {
            options.set_credentials(credentials.username.clone(), credentials.password.clone());
        }

        let (client, connection) = Client::new(options, config.max_queued);
        let shared = Arc::new(Shared::default());
        let publisher = Publisher { client, shared: Arc::clone(&shared), qos: qos(config.qos) };
        publisher.set_status(&device_status, true);

        let stop = Shutdown::new();
        let (finished_tx, finished) = mpsc::channel();
        let link = LinkThread {
            connection,
            shared,
            sent: BTreeMap::new(),
            sent_version: None,
            stop: stop.clone(),
            broker: format!("{}:{}", config.host, config.port),
            client_id: config.client_id.clone(),
            reconnect_max: config.reconnect_max,
        };
        thread::Builder::new()
            .name("mqtt".to_string())
            .spawn(move || {
                link.run();
                let _ = finished_tx.send(());
            })
            .map_err(PublishError::Thread)?;

        Ok(MqttLink { publisher, device_status, stop, finished })
    }

    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Publishes the daemon's retained `offline` status and every status set
    /// before, sends what is still queued, disconnects cleanly so the broker
    /// does not publish the last will, and waits for the thread to end, for
    /// at most `timeout`. Without a connection it gives up at once: the broker
    /// has then already published the last will `offline`, or has never seen
    /// the daemon.
    pub fn shutdown(self, timeout: Duration) {
        self.publisher.set_status(&self.device_status, false);
        self.stop.trigger();
        if self.finished.recv_timeout(timeout).is_err() {
            warn!("MQTT connection did not close within {} s; exiting without a clean disconnect", timeout.as_secs());
        }
    }
}

fn qos(level: Qos) -> QoS {
    match level {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A broker outage: from the first failed attempt to the next connect.
struct Outage {
    started: Instant,
    failed_attempts: u32,
}

struct LinkThread {
    connection: rumqttc::Connection,
    shared: Arc<Shared>,
    /// Statuses queued in the current session, and the board version they reflect.
    sent: BTreeMap<String, &'static str>,
    sent_version: Option<u64>,
    stop: Shutdown,
    broker: String,
    client_id: String,
    reconnect_max: Duration,
}

/// Outcome of one poll of the event loop.
enum Polled {
    Event(Event),
    Failed(ConnectionError),
    /// Nothing happened within [`POLL_TICK`], so no queued message was ready to send.
    Idle,
    /// Every [`Client`] has been dropped.
    Closed,
}

impl LinkThread {
    fn run(mut self) {
        let mut connected = false;
        let mut ever_connected = false;
        let mut outage: Option<Outage> = None;
        let mut backoff = INITIAL_BACKOFF;
        let mut queue_drained = false;
        let mut disconnect_sent = false;

        loop {
            let stopping = self.stop.is_triggered();
            if connected {
                self.queue_changed_statuses();
                if stopping && queue_drained && !disconnect_sent {
                    // The pending list goes out in order, so the disconnect follows the last statuses.
                    self.connection.eventloop.pending.push_back(Request::Disconnect(rumqttc::Disconnect));
                    disconnect_sent = true;
                }
            } else if stopping {
                debug!("MQTT link stopping without a broker connection");
                return;
            }

            match self.poll(connected) {
                Polled::Event(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = INITIAL_BACKOFF;
                    match outage.take() {
                        Some(outage) if ever_connected => info!(
                            "reconnected to MQTT broker {} after {:.1} s and {} failed attempts",
                            self.broker,
                            outage.started.elapsed().as_secs_f64(),
                            outage.failed_attempts
                        ),
                        Some(outage) => info!(
                            "connected to MQTT broker {} as {} after {:.1} s and {} failed attempts",
                            self.broker,
                            self.client_id,
                            outage.started.elapsed().as_secs_f64(),
                            outage.failed_attempts
                        ),
                        None => info!("connected to MQTT broker {} as {}", self.broker, self.client_id),
                    }
                    ever_connected = true;
                    // Publish every status again: the new session may be on a broker that lost them.
                    self.sent.clear();
                    self.sent_version = None;
                    self.queue_changed_statuses();
                }
                Polled::Event(Event::Outgoing(Outgoing::Publish(_))) => {
                    self.shared.published.fetch_add(1, Ordering::Relaxed);
                }
                Polled::Event(Event::Outgoing(Outgoing::Disconnect)) => {
                    info!("disconnected from MQTT broker {}", self.broker);
                    return;
                }
                Polled::Event(_) => {}
                Polled::Idle => queue_drained = stopping,
                Polled::Closed => return,
                Polled::Failed(error) => {
                    connected = false;
                    self.drop_pending();
                    let outage = outage.get_or_insert_with(|| {
                        let verb = if ever_connected { "lost" } else { "failed" };
                        warn!(
                            "MQTT connection to {} {verb}: {error}; retrying after {:.2} s, doubling the wait up to {} s",
                            self.broker,
                            INITIAL_BACKOFF.as_secs_f64(),
                            self.reconnect_max.as_secs()
                        );
                        Outage { started: Instant::now(), failed_attempts: 0 }
                    });
                    outage.failed_attempts += 1;
                    debug!("MQTT connection attempt {} to {} failed: {error}", outage.failed_attempts, self.broker);

                    if stopping || self.stop.wait_timeout(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(self.reconnect_max);
                }
            }
        }
    }

    /// Polls the event loop once. While connected, the poll gives up after
    /// [`POLL_TICK`] so the loop can look at statuses and shutdown. While
    /// connecting, it waits for the attempt to finish, because rumqttc would
    /// start a cancelled connection attempt over from the beginning.
    // NOTE: giving up relies on rumqttc's `recv_timeout`, which drops the
    // poll future. A poll dropped while the socket buffer is full could lose
    // the packet it was writing: an uncounted message, or for QoS 2 a PUBREL.
    fn poll(&mut self, connected: bool) -> Polled {
        if connected {
            match self.connection.recv_timeout(POLL_TICK) {
                Ok(Ok(event)) => Polled::Event(event),
                Ok(Err(error)) => Polled::Failed(error),
                Err(RecvTimeoutError::Timeout) => Polled::Idle,
                Err(RecvTimeoutError::Disconnected) => Polled::Closed,
            }
        } else {
            match self.connection.recv() {
                Ok(Ok(event)) => Polled::Event(event),
                Ok(Err(error)) => Polled::Failed(error),
                Err(_) => Polled::Closed,
            }
        }
    }

    /// Puts the statuses that differ from what this session has sent into the pending list.
    fn queue_changed_statuses(&mut self) {
        let board = self.shared.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        if self.sent_version == Some(board.version) {
            return;
        }
        for (topic, &status) in &board.statuses {
            if self.sent.get(topic) != Some(&status) {
                let mut publish = rumqttc::Publish::new(topic, QoS::AtLeastOnce, status);
                publish.retain = true;
                self.connection.eventloop.pending.push_back(Request::Publish(publish));
                self.sent.insert(topic.clone(), status);
            }
        }
        self.sent_version = Some(board.version);
    }

    /// Empties rumqttc's pending list after a connection error and counts the
    /// non-retained messages in it as dropped. Retained statuses are not
    /// counted: they are published again on connect.
    fn drop_pending(&mut self) {
        let lost = self
            .connection
            .eventloop
            .pending
            .drain(..)
            .filter(|request| matches!(request, Request::Publish(publish) if !publish.retain))
            .count() as u64;
        if lost > 0 {
            self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
            debug!("dropped {lost} MQTT messages that were queued when the connection failed");
        }
    }
}
