//! The detection daemon: loads the model once, connects to MQTT, runs one
//! worker thread per camera, publishes stats, and shuts down cleanly.
//!
//! [`run`] owns the order of start and stop. On start: model, embedded
//! broker (if configured), MQTT link, camera workers, stats ticker. Stop
//! comes with SIGTERM, SIGINT, or every source finished under
//! `exit_when_done`. Then the workers finish their current frame and publish
//! their camera's `offline`, a last stats message goes out, then the
//! device's `offline`. Last, the MQTT connection is closed with a DISCONNECT
//! so the broker does not publish the last will. This module reads no files
//! itself and parses no config.

mod shutdown;
mod stats;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info};

pub use shutdown::{Shutdown, SignalListener};
pub use worker::Echo;

use crate::config::Config;
use crate::detector::Detector;
use crate::model::{Model, ModelError};
use crate::publish::{self, MqttLink, PublishError, Publisher, Topics};
use stats::{CameraCounters, StatsReporter};
use worker::CameraWorker;

/// Maximum wait for the MQTT connection to send the last messages and disconnect.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Choices of `edgedet run` that are not in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Write every detections payload to stdout as well.
    pub echo: Echo,
    /// Exit after every non-looping source has finished, even if the config does not say so.
    pub exit_when_done: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("loading model {path}")]
    Model {
        path: String,
        #[source]
        source: Box<ModelError>,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("starting thread {name}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is triggered, or until every source has
/// finished when `exit_when_done` is set in the config or in `options`.
///
/// # Errors
/// Failures to start: the model does not load, the embedded broker cannot
/// listen, or a thread cannot be started. Once running, problems with
/// sources, frames or the broker are logged and retried, not returned.
pub fn run(config: &Config, options: RunOptions, shutdown: Shutdown) -> Result<(), DaemonError> {
    let model = load_model(config)?;
    let detector = Detector::new(Arc::clone(&model), config.model.detector);

    let _broker = if config.mqtt.embedded_broker { Some(publish::start_embedded_broker(&config.mqtt)?) } else { None };
    let topics = Topics::new(&config.mqtt.topic_prefix, &config.device_id);
    let link = MqttLink::start(&config.mqtt, &topics)?;
    info!(
        "device {}: publishing to {}:{} under {}/{}/ with QoS {} and a queue of {} messages",
        config.device_id,
        config.mqtt.host,
        config.mqtt.port,
        config.mqtt.topic_prefix,
        config.device_id,
        u8::from(config.mqtt.qos),
        config.mqtt.max_queued
    );

    let exit_when_done = options.exit_when_done || config.exit_when_done;
    let (workers, counters) =
        start_workers(config, &detector, &link.publisher(), &topics, &shutdown, options.echo, exit_when_done)?;

    let reporter =
        Arc::new(StatsReporter::new(model.description(), model.precision().to_string(), counters, link.publisher()));
    let stats_stop = Shutdown::new();
    let stats_thread = match config.mqtt.stats_interval {
        Some(interval) => Some(
            spawn_stats_ticker(interval, &reporter, link.publisher(), topics.stats(), &stats_stop)
                // Stop the camera workers, which are already running.
                .inspect_err(|_| shutdown.trigger())?,
        ),
        None => None,
    };

    shutdown.wait();
    info!("stopping: waiting for the camera workers to finish their current frame");

    for (name, worker) in workers {
        if worker.join().is_err() {
            error!("camera {name}: worker thread panicked");
        }
    }
    stats_stop.trigger();
    if let Some(ticker) = stats_thread {
        if ticker.join().is_err() {
            error!("stats thread panicked");
        }
        // A last message with the final counters, so that a run over a
        // folder reports its totals even when it is shorter than the interval.
        publish_stats(&reporter, &link.publisher(), &topics.stats());
    }

    link.shutdown(DISCONNECT_TIMEOUT);
    info!("stopped");
    Ok(())
}

/// Loads the configured model, logging its description and load time.
///
/// # Errors
/// [`DaemonError::Model`] when the model files are missing or invalid.
pub fn load_model(config: &Config) -> Result<Arc<Model>, DaemonError> {
    let started = Instant::now();
    let path = config.model.spec.path.display().to_string();
    let model = Model::load(&config.model.spec)
        .map_err(|source| DaemonError::Model { path: path.clone(), source: Box::new(source) })?;
    info!(
        "loaded model {} from {path} in {:.2} s (threshold {}, NMS threshold {})",
        model.description(),
        started.elapsed().as_secs_f64(),
        config.model.detector.threshold,
        config.model.detector.nms_threshold
    );
    Ok(Arc::new(model))
}

type Workers = Vec<(String, JoinHandle<()>)>;
type Counters = Vec<(String, Arc<CameraCounters>)>;

/// Starts one thread per camera. With `exit_when_done`, the last worker to
/// finish triggers `shutdown`.
fn start_workers(
    config: &Config,
    detector: &Detector,
    publisher: &Publisher,
    topics: &Topics,
    shutdown: &Shutdown,
    echo: Echo,
    exit_when_done: bool,
) -> Result<(Workers, Counters), DaemonError> {
    let running = Arc::new(AtomicUsize::new(config.cameras.len()));
    let mut workers = Vec::with_capacity(config.cameras.len());
    let mut counters = Vec::with_capacity(config.cameras.len());

    for camera in &config.cameras {
        let camera_counters = Arc::new(CameraCounters::default());
        counters.push((camera.name.clone(), Arc::clone(&camera_counters)));

        let worker = CameraWorker {
            camera: camera.clone(),
            source: crate::frame_source::open(camera),
            detector: detector.clone(),
            publisher: publisher.clone(),
            topics: topics.clone(),
            counters: camera_counters,
            shutdown: shutdown.clone(),
            echo,
        };
        let running = Arc::clone(&running);
        let done = shutdown.clone();
        let handle = thread::Builder::new()
            .name(format!("camera-{}", camera.name))
            .spawn(move || {
                worker.run();
                let still_running = running.fetch_sub(1, Ordering::AcqRel) - 1;
                if exit_when_done && still_running == 0 && !done.is_triggered() {
                    info!("every source has finished; exiting as exit_when_done asks");
                    done.trigger();
                }
            })
            .map_err(|source| {
                // Stop the workers already started before giving up.
                shutdown.trigger();
                DaemonError::Thread { name: format!("camera-{}", camera.name), source }
            })?;
        workers.push((camera.name.clone(), handle));
    }
    Ok((workers, counters))
}

fn spawn_stats_ticker(
    interval: Duration,
    reporter: &Arc<StatsReporter>,
    publisher: Publisher,
    topic: String,
    stop: &Shutdown,
) -> Result<JoinHandle<()>, DaemonError> {
    let reporter = Arc::clone(reporter);
    let stop = stop.clone();
    thread::Builder::new()
        .name("stats".to_string())
        .spawn(move || {
            while !stop.wait_timeout(interval) {
                publish_stats(&reporter, &publisher, &topic);
            }
        })
        .map_err(|source| DaemonError::Thread { name: "stats".to_string(), source })
}

fn publish_stats(reporter: &StatsReporter, publisher: &Publisher, topic: &str) {
    match serde_json::to_vec(&reporter.report()) {
        Ok(json) => {
            publisher.publish(topic, json);
        }
        Err(error) => error!("encoding the stats message as JSON: {error}"),
    }
}

/// Formats an error and its sources on one line, `outer: inner: innermost`,
/// for log lines.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
