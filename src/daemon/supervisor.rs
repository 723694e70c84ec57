//! Keeps the cameras running while the daemon runs: starts and stops their
//! workers, applies config reloads, and pings the systemd watchdog.
//!
//! Cameras without their own `model` table share one detector built on the
//! `[model]` instance. A camera with its own table gets its own detector; it
//! shares a loaded model with every other camera, or with `[model]`, that
//! names the same files, so each model is loaded once.
//!
//! A reload reads the config file again and applies what can change without
//! a restart. The model and its thresholds change with each camera's next
//! frame. Removed cameras stop, added ones start, changed ones restart, and
//! unchanged ones keep running.
//! The device id and the `[mqtt]` section stay as they were, so the broker
//! connection is never dropped; changing them needs a restart, which the log
//! says. A config that does not load, or a model that does not, leaves the
//! running config in place.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::notify::ServiceNotifier;
use super::shutdown::Shutdown;
use super::stats::{CameraCounters, StatsReporter};
use super::watchdog::{Heartbeat, Watchdog, WatchedCamera};
use super::worker::{CameraWorker, SharedDetector};
use super::{error_chain, load_model, load_model_spec, Control, DaemonError, OpenSource, RunOptions};
use crate::config::{CameraConfig, Config, ConfigError};
use crate::detector::Detector;
use crate::frame_source::FrameSourceError;
use crate::model::{Model, ModelSpec};
use crate::publish::{Publisher, Topics};
use crate::thermal::{RateLimit, ThermalGovernor};

/// How often the supervisor looks at reload requests, finished cameras and
/// the watchdog. It also bounds how late a SIGHUP is acted on.
const CONTROL_TICK: Duration = Duration::from_millis(100);

/// The parts of the pipeline that every camera shares.
pub struct Pipeline {
    pub model: Arc<Model>,
    pub detector: SharedDetector,
    pub publisher: Publisher,
    pub topics: Topics,
    pub reporter: Arc<StatsReporter>,
    /// The detection rate limit that `[thermal]` sets while the CPU is hot.
    pub rate_limit: Arc<RateLimit>,
}

/// One camera's worker thread and what the supervisor keeps of it.
struct RunningCamera {
    config: CameraConfig,
    counters: Arc<CameraCounters>,
    heartbeat: Arc<Heartbeat>,
    stop: Shutdown,
    thread: JoinHandle<()>,
}

/// Reason a reload left the running config in place.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] FrameSourceError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

pub struct Supervisor<'a> {
    config: Config,
    options: RunOptions,
    open_source: &'a OpenSource,
    notifier: &'a ServiceNotifier,
    pipeline: Pipeline,
    /// Models that cameras' own `model` tables name, other than `[model]`'s.
    camera_models: Vec<(ModelSpec, Arc<Model>)>,
    cameras: Vec<RunningCamera>,
    thermal: Option<ThermalGovernor>,
}

impl<'a> Supervisor<'a> {
    pub fn new(
        config: Config,
        options: RunOptions,
        open_source: &'a OpenSource,
        notifier: &'a ServiceNotifier,
        pipeline: Pipeline,
    ) -> Supervisor<'a> {
        let thermal = thermal_governor(&config, &pipeline.rate_limit);
        Supervisor {
            config,
            options,
            open_source,
            notifier,
            pipeline,
            camera_models: Vec::new(),
            cameras: Vec::new(),
            thermal,
        }
    }

    /// The detector of `camera`: the shared one, or one on its own model.
    ///
    /// # Errors
    /// [`DaemonError::Model`] when the camera's own model does not load.
    fn detector_for(&mut self, camera: &CameraConfig) -> Result<SharedDetector, DaemonError> {
        let Some(own) = &camera.model else {
            return Ok(self.pipeline.detector.clone());
        };
        let model = self.model_for(&own.spec)?;
        Ok(SharedDetector::new(Detector::new(model, own.detector)))
    }

    /// Returns the loaded model of `spec`, loading it on first use.
    fn model_for(&mut self, spec: &ModelSpec) -> Result<Arc<Model>, DaemonError> {
        if *spec == self.config.model.spec {
            return Ok(Arc::clone(&self.pipeline.model));
        }
        if let Some((_, model)) = self.camera_models.iter().find(|(loaded, _)| loaded == spec) {
            return Ok(Arc::clone(model));
        }
        let model = self.notifier.keep_alive(|| load_model_spec(spec))?;
        self.camera_models.push((spec.clone(), Arc::clone(&model)));
        Ok(model)
    }

    /// Starts every configured camera.
    ///
    /// # Errors
    /// [`DaemonError::Thread`] when a thread cannot start; the cameras
    /// already started are stopped again.
    pub fn start_cameras(&mut self) -> Result<(), DaemonError> {
        for camera in self.config.cameras.clone() {
            if let Err(error) = self.start_camera(camera) {
                self.stop_cameras();
                return Err(error);
            }
        }
        self.report_cameras();
        Ok(())
    }

    fn start_camera(&mut self, camera: CameraConfig) -> Result<(), DaemonError> {
        let detector = self.detector_for(&camera)?;
        let counters = Arc::new(CameraCounters::default());
        let heartbeat = Arc::new(Heartbeat::default());
        let stop = Shutdown::new();
        let worker = CameraWorker {
            camera: camera.clone(),
            source: (self.open_source)(&camera),
            detector,
            publisher: self.pipeline.publisher.clone(),
            topics: self.pipeline.topics.clone(),
            counters: Arc::clone(&counters),
            heartbeat: Arc::clone(&heartbeat),
            shutdown: stop.clone(),
            echo: self.options.echo,
            rate_limit: Arc::clone(&self.pipeline.rate_limit),
        };
        let name = format!("camera-{}", camera.name);
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || worker.run())
            .map_err(|source| DaemonError::Thread { name, source })?;
        self.cameras.push(RunningCamera { config: camera, counters, heartbeat, stop, thread });
        Ok(())
    }

    /// Stops every camera and waits until each has published its `offline`.
    pub fn stop_cameras(&mut self) {
        let cameras = std::mem::take(&mut self.cameras);
        for camera in &cameras {
            camera.stop.trigger();
        }
        for camera in cameras {
            join(camera);
        }
    }

    /// Returns one line for `systemctl status`: the model and the cameras.
    pub fn status(&self) -> String {
        let options = self.config.model.detector;
        format!(
            "{} (threshold {}, NMS {}), {} camera{}",
            self.pipeline.model.description(),
            options.threshold,
            options.nms_threshold,
            self.cameras.len(),
            if self.cameras.len() == 1 { "" } else { "s" }
        )
    }

    /// Runs until shutdown is requested, or until every source has finished
    /// under `exit_when_done`. Applies reload requests and pings the
    /// watchdog meanwhile.
    pub fn supervise(&mut self, control: &Control) {
        let mut watchdog = self.notifier.watchdog_period().map(Watchdog::new);
        if let Some(watchdog) = &watchdog {
            info!(
                "watchdog: pinging the service manager every {} ms while cameras progress",
                watchdog.ping_interval().as_millis()
            );
        }
        while !control.shutdown.wait_timeout(CONTROL_TICK) {
            if control.reload.take() {
                self.reload();
            }
            if let Some(thermal) = &mut self.thermal {
                thermal.tick(Instant::now());
            }
            if let Some(watchdog) = &mut watchdog {
                let cameras = self.cameras.iter().map(|camera| WatchedCamera {
                    name: &camera.config.name,
                    heartbeat: &camera.heartbeat,
                    frame_interval: camera.config.frame_interval,
                });
                if watchdog.should_ping(cameras) {
                    self.notifier.watchdog();
                }
            }
            let exit_when_done = self.options.exit_when_done || self.config.exit_when_done;
            if exit_when_done && self.cameras.iter().all(|camera| camera.thread.is_finished()) {
                info!("every source has finished; exiting as exit_when_done asks");
                return;
            }
        }
    }

    /// Reads the config file again and applies it, or keeps the running
    /// config when the new one is invalid.
    fn reload(&mut self) {
        self.notifier.reloading();
        let path = self.config.path.clone();
        let reloaded = Config::load(&path).map_err(ReloadError::from).and_then(|config| self.apply(config));
        match reloaded {
            Ok(summary) => info!("reloaded {}: {summary}", path.display()),
            Err(error) => {
                error!("reloading {}: {}; keeping the running config", path.display(), error_chain(&error))
            }
        }
        self.notifier.ready(&self.status());
    }

    /// Applies a new config and returns a summary of what changed.
    fn apply(&mut self, mut new: Config) -> Result<String, ReloadError> {
        new.check_files()?;
        crate::frame_source::check_programs(&new.cameras)?;
        if new.device_id != self.config.device_id || new.mqtt != self.config.mqtt {
            warn!("reload: device.id and [mqtt] take effect at the next restart; the broker connection stays as it is");
            new.device_id.clone_from(&self.config.device_id);
            new.mqtt = self.config.mqtt.clone();
        }

        // Load every new model before changing anything, so that a model
        // that fails to load leaves everything running.
        let model_changed = new.model.spec != self.config.model.spec;
        let new_default = if model_changed { Some(self.notifier.keep_alive(|| load_model(&new))?) } else { None };
        let mut loaded: Vec<(ModelSpec, Arc<Model>)> = Vec::new();
        for spec in new.cameras.iter().filter_map(|camera| camera.model.as_ref().map(|model| &model.spec)) {
            let known = *spec == new.model.spec
                || self.camera_models.iter().chain(&loaded).any(|(loaded_spec, _)| loaded_spec == spec);
            if !known {
                loaded.push((spec.clone(), self.notifier.keep_alive(|| load_model_spec(spec))?));
            }
        }

        self.camera_models.extend(loaded);
        if let Some(model) = new_default {
            self.pipeline.reporter.set_model(model.description(), model.precision().to_string());
            self.pipeline.model = model;
        }
        if model_changed || new.model.detector != self.config.model.detector {
            self.pipeline.detector.replace(Detector::new(Arc::clone(&self.pipeline.model), new.model.detector));
        }
        self.config.model = new.model.clone();
        if new.thermal != self.config.thermal {
            self.thermal = thermal_governor(&new, &self.pipeline.rate_limit);
            if self.thermal.is_none() {
                self.pipeline.rate_limit.disable();
            }
            self.config.thermal = new.thermal.clone();
        }

        let (mut kept, mut restarted, mut removed) = (0, 0, 0);
        let running = std::mem::take(&mut self.cameras);
        let (stay, leave): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|camera| new.cameras.contains(&camera.config));
        for camera in &leave {
            camera.stop.trigger();
        }
        for camera in leave {
            if new.cameras.iter().any(|wanted| wanted.name == camera.config.name) {
                restarted += 1;
            } else {
                removed += 1;
            }
            join(camera);
        }
        self.cameras = stay;
        let mut added = 0;
        for camera in &new.cameras {
            if self.cameras.iter().any(|running| running.config == *camera) {
                kept += 1;
                continue;
            }
            if let Err(error) = self.start_camera(camera.clone()) {
                error!("camera {}: {}", camera.name, error_chain(&error));
            }
            added += 1;
        }
        added -= restarted;
        // Models that no camera uses any more are only held by this list.
        self.camera_models.retain(|(_, model)| Arc::strong_count(model) > 1);
        // Keep the config's order of cameras in the stats.
        self.cameras.sort_by_key(|running| new.cameras.iter().position(|camera| camera.name == running.config.name));
        self.config = new;
        self.report_cameras();

        Ok(format!("{}; cameras: {kept} kept, {restarted} restarted, {added} added, {removed} removed", self.status()))
    }

    fn report_cameras(&self) {
        let cameras =
            self.cameras.iter().map(|camera| (camera.config.name.clone(), Arc::clone(&camera.counters))).collect();
        self.pipeline.reporter.set_cameras(cameras);
    }
}

/// Builds the governor of `[thermal]`, or returns `None` when the config has no such table.
fn thermal_governor(config: &Config, rate_limit: &Arc<RateLimit>) -> Option<ThermalGovernor> {
    let thermal = config.thermal.clone()?;
    info!(
        "thermal: above {:.1} °C or while the Pi firmware reports throttling, each camera detects at most once every {} ms",
        thermal.hot_c,
        thermal.hot_interval.as_millis()
    );
    Some(ThermalGovernor::new(thermal, Arc::clone(rate_limit)))
}

fn join(camera: RunningCamera) {
    if camera.thread.join().is_err() {
        error!("camera {}: worker thread panicked", camera.config.name);
    }
}
