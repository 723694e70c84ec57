//! The detection daemon: loads the model once, connects to MQTT, runs two
//! threads per camera (capture and inference), publishes stats, reloads its
//! config on request, reports its state to systemd, and shuts down cleanly.
//!
//! [`run`] owns the order of start and stop. On start: model, embedded
//! broker (if configured), MQTT link, cameras, stats ticker, then readiness
//! to systemd (cameras report their own status and never hold readiness
//! back). While running, the [`supervisor`] applies reloads and pings the
//! systemd watchdog while every camera makes progress. Stop comes with
//! SIGTERM, SIGINT, or every source finished under `exit_when_done`. Then
//! the cameras finish their current frame and publish their `offline`, a
//! last stats message goes out, then the device's `offline`. Last, the MQTT
//! connection is closed with a DISCONNECT so the broker does not publish the
//! last will. This module parses no config itself; a reload reads the file
//! again through [`crate::config`].

mod capture;
mod notify;
mod shutdown;
mod stats;
mod supervisor;
mod watchdog;
mod worker;

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info};

pub use notify::ServiceNotifier;
pub use shutdown::{listen_to_signals, ReloadRequest, Shutdown, SignalListener};
pub use worker::Echo;

use crate::config::{CameraConfig, Config};
use crate::detector::Detector;
use crate::frame_source::FrameSource;
use crate::model::{Model, ModelError, ModelSpec};
use crate::publish::{self, MqttLink, PublishError, Publisher, Topics};
use crate::thermal::RateLimit;
use stats::StatsReporter;
use supervisor::Supervisor;
use worker::SharedDetector;

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

/// The requests that reach a running daemon from outside: stop, and reload.
#[derive(Clone, Debug, Default)]
pub struct Control {
    pub shutdown: Shutdown,
    pub reload: ReloadRequest,
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

/// Opens the frame source that a camera entry describes.
pub type OpenSource = dyn Fn(&CameraConfig) -> Box<dyn FrameSource> + Sync;

/// Runs the daemon until `control.shutdown` is triggered, or until every
/// source has finished when `exit_when_done` is set in the config or in
/// `options`. `control.reload` makes it read its config file again.
///
/// # Errors
/// Failures to start: the model does not load, the embedded broker cannot
/// listen, or a thread cannot be started. Once running, problems with
/// sources, frames, reloads or the broker are logged and retried, not returned.
pub fn run(config: Config, options: RunOptions, control: &Control) -> Result<(), DaemonError> {
    run_with_sources(config, options, control, &crate::frame_source::open)
}

/// [`run`], with the cameras' sources opened by `open_source` instead of
/// [`crate::frame_source::open`]: the seam through which tests give the
/// daemon scripted sources, such as a V4L2 device that comes and goes.
///
/// # Errors
/// As [`run`].
pub fn run_with_sources(
    config: Config,
    options: RunOptions,
    control: &Control,
    open_source: &OpenSource,
) -> Result<(), DaemonError> {
    let notifier = ServiceNotifier::from_env();
    let model = notifier.keep_alive(|| load_model(&config))?;
    let detector = SharedDetector::new(Detector::new(Arc::clone(&model), config.model.detector));

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

    let rate_limit = Arc::new(RateLimit::default());
    let reporter = Arc::new(StatsReporter::new(
        model.description(),
        model.precision().to_string(),
        link.publisher(),
        Arc::clone(&rate_limit),
    ));
    let stats_interval = config.mqtt.stats_interval;
    let mut supervisor = Supervisor::new(
        config,
        options,
        open_source,
        &notifier,
        supervisor::Pipeline {
            model,
            detector,
            publisher: link.publisher(),
            topics: topics.clone(),
            reporter: Arc::clone(&reporter),
            rate_limit,
        },
    );
    supervisor.start_cameras()?;

    let stats_stop = Shutdown::new();
    let stats_thread = match stats_interval {
        Some(interval) => {
            match spawn_stats_ticker(interval, &reporter, link.publisher(), topics.stats(), &stats_stop) {
                Ok(thread) => Some(thread),
                Err(error) => {
                    supervisor.stop_cameras();
                    return Err(error);
                }
            }
        }
        None => None,
    };

    notifier.ready(&supervisor.status());
    supervisor.supervise(control);

    notifier.stopping();
    info!("stopping: waiting for the cameras to finish their current frame");
    supervisor.stop_cameras();
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

/// Loads the `[model]` of `config`, logging its description and load time.
///
/// # Errors
/// [`DaemonError::Model`] when the model files are missing or invalid.
pub fn load_model(config: &Config) -> Result<Arc<Model>, DaemonError> {
    load_model_spec(&config.model.spec)
}

/// Loads the model that `spec` names, logging its description and load time.
///
/// # Errors
/// [`DaemonError::Model`] when the model files are missing or invalid.
pub fn load_model_spec(spec: &ModelSpec) -> Result<Arc<Model>, DaemonError> {
    let started = Instant::now();
    let path = spec.path.display().to_string();
    let model =
        Model::load(spec).map_err(|source| DaemonError::Model { path: path.clone(), source: Box::new(source) })?;
    info!("loaded model {} from {path} in {:.2} s", model.description(), started.elapsed().as_secs_f64());
    Ok(Arc::new(model))
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
