//! A real mosquitto broker per test on a free loopback port, and an MQTT
//! subscriber that collects what it receives.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long mosquitto gets to accept connections after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("reading the ephemeral port").port()
}

/// A mosquitto process listening on 127.0.0.1 only, without persistence,
/// killed when dropped.
pub struct Mosquitto {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free port.
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    /// Starts mosquitto on `port` and waits until it accepts connections.
    ///
    /// # Panics
    /// When mosquitto is not installed, exits early or does not listen in time.
    pub fn start_on(port: u16) -> Mosquitto {
        let binary = find_mosquitto();
        let dir = tempfile::tempdir().expect("creating a folder for the mosquitto config");
        let config_path = dir.path().join("mosquitto.conf");
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
        );
        std::fs::write(&config_path, config).expect("writing the mosquitto config");

        let log_path = dir.path().join("mosquitto.log");
        let log = File::create(&log_path).expect("creating the mosquitto log file");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));

        let mut mosquitto = Mosquitto { child, port, log_path, _dir: dir };
        mosquitto.wait_until_listening();
        mosquitto
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// mosquitto's log so far, for assertion messages.
    pub fn log(&self) -> String {
        read_to_string_lossy(&self.log_path)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mosquitto exited with {status} before listening on port {}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "mosquitto did not listen on port {} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the mosquitto binary, which Debian installs in /usr/sbin, outside
/// the PATH of most users.
fn find_mosquitto() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("mosquitto")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/mosquitto"), PathBuf::from("/usr/local/sbin/mosquitto")])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto is not installed (not on PATH, nor in /usr/sbin): install the Debian package mosquitto, or run tests/run.sh, which installs it")
        })
}

fn read_to_string_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One received MQTT message.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set when the broker delivered a stored retained message, rather than
    /// forwarding a new publish.
    pub retain: bool,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|error| panic!("message on {} is not JSON ({error}): {}", self.topic, self.text()))
    }
}

/// An MQTT client subscribed to some topic filters, collecting messages on a thread.
pub struct Subscriber {
    client: Client,
    received: mpsc::Receiver<Message>,
    /// Every message received so far, in order.
    pub messages: Vec<Message>,
    stop: Arc<AtomicBool>,
}

static NEXT_CLIENT: AtomicU32 = AtomicU32::new(0);

impl Subscriber {
    /// Connects to the broker on 127.0.0.1:`port` and subscribes to
    /// `filters`; returns once the broker has acknowledged the subscription,
    /// so retained messages are on their way.
    pub fn connect(port: u16, filters: &[&str]) -> Subscriber {
        let id = format!("edgedet-test-{}-{}", std::process::id(), NEXT_CLIENT.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(1024 * 1024, 10 * 1024);
        let (client, mut connection) = Client::new(options, 16);
        for filter in filters {
            client.subscribe(*filter, QoS::AtLeastOnce).expect("queueing the subscription");
        }

        let (message_tx, received) = mpsc::channel();
        let (subscribed_tx, subscribed) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        thread::spawn(move || {
            for event in connection.iter() {
                if thread_stop.load(Ordering::Relaxed) {
                    return;
                }
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let message = Message {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                            retain: publish.retain,
                        };
                        if message_tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        });

        subscribed.recv_timeout(Duration::from_secs(10) * filters.len() as u32).unwrap_or_else(|_| {
            panic!("the broker on port {port} did not acknowledge the subscription to {filters:?}")
        });
        Subscriber { client, received, messages: Vec::new(), stop }
    }

    /// Returns the first message so far, or arriving within `timeout`, that matches `predicate`.
    pub fn wait_for(&mut self, timeout: Duration, predicate: impl Fn(&Message) -> bool) -> Option<Message> {
        if let Some(found) = self.messages.iter().find(|message| predicate(message)) {
            return Some(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.received.recv_timeout(left).ok()?;
            self.messages.push(message.clone());
            if predicate(&message) {
                return Some(message);
            }
        }
    }

    /// Returns the first message on `topic`, arriving within `timeout`.
    pub fn wait_for_topic(&mut self, timeout: Duration, topic: &str) -> Option<Message> {
        self.wait_for(timeout, |message| message.topic == topic)
    }

    /// Topics and payloads received so far, for assertion messages.
    pub fn summary(&self) -> String {
        self.messages
            .iter()
            .map(|message| {
                let text: String = message.text().chars().take(120).collect();
                format!("{} (retain {}): {text}", message.topic, message.retain)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}
