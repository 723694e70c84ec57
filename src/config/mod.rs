//! The daemon's configuration: a TOML file read once into a validated [`Config`].
//!
//! Reading takes two steps, as a command line is parsed into low-level and
//! then settled arguments. [`file::ConfigFile`] mirrors the TOML tables:
//! serde rejects unknown keys, and single values check themselves
//! ([`values`]) so that toml can report their line. [`Config::from_file`]
//! then resolves what depends on the surroundings (the host name, paths
//! relative to the config file's directory) and checks rules that span
//! several keys. Nothing here opens model or image files;
//! [`Config::check_files`] only checks that they exist.
//!
//! [`DEFAULT_CONFIG`] is the commented default config that
//! `edgedet config --default` prints. A test parses it and compares it with
//! the defaults of [`file`], so the two cannot drift apart.

mod error;
pub mod file;
pub mod values;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use file::SourceKind;
pub use values::Qos;

use crate::detector::DetectorOptions;
use crate::model::ModelSpec;
use file::{CameraSection, ConfigFile, MqttSection};
use values::TopicLevel;

/// The commented default config, as `edgedet config --default` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A validated configuration, with defaults applied and paths resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this config was read from, for messages.
    pub path: PathBuf,
    /// Second level of every topic.
    pub device_id: String,
    /// Exit once every non-looping source has finished.
    pub exit_when_done: bool,
    pub model: ModelConfig,
    pub mqtt: MqttConfig,
    /// At least one, with unique names.
    pub cameras: Vec<CameraConfig>,
    /// `None` keeps every camera at its configured rate whatever the CPU's temperature.
    pub thermal: Option<crate::thermal::ThermalConfig>,
}

/// `[model]`, with paths resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub spec: ModelSpec,
    pub detector: DetectorOptions,
}

/// `[mqtt]`, with the client id resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub embedded_broker: bool,
    pub client_id: String,
    pub credentials: Option<Credentials>,
    /// QoS of detections and stats.
    pub qos: Qos,
    /// `None` when keep-alive is off.
    pub keep_alive: Option<Duration>,
    /// Levels before the device id, without a trailing `/`.
    pub topic_prefix: String,
    /// `None` when stats are off.
    pub stats_interval: Option<Duration>,
    /// Capacity of the queue of messages waiting for the broker.
    pub max_queued: usize,
    /// Cap of the reconnection backoff.
    pub reconnect_max: Duration,
}

/// Broker login. `Debug` leaves the password out, so that logging a config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    /// Empty when the config sets only a username.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

/// One `[[cameras]]` entry, with its path resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraConfig {
    pub name: String,
    pub source: SourceKind,
    /// Resolved against the config file's directory, except a URL and the
    /// camera index of an `rpicam` source, which are kept as written.
    pub path: PathBuf,
    pub looping: bool,
    /// Minimum time between the starts of two frames; `None` for no limit.
    pub frame_interval: Option<Duration>,
    /// Size that a `stream` source scales its frames to. `None` keeps the
    /// input's own size, which the source reads with ffprobe. For a `device`
    /// source, the size requested from the device, and for an `rpicam`
    /// source the size rpicam-vid outputs, both even.
    pub frame_size: Option<FrameSize>,
    /// Whether a `stream` source is read at the input's own frame rate
    /// (ffmpeg's `-re`) rather than as fast as frames are taken.
    pub realtime: bool,
    /// Pixel format that a `device` source must capture; `None` lets it choose.
    pub pixel_format: Option<crate::convert::PixelFormat>,
    /// Further arguments that an `rpicam` source passes to rpicam-vid; empty for other sources.
    pub rpicam_args: Vec<String>,
    /// The camera's own `model` table; `None` shares `[model]`.
    pub model: Option<ModelConfig>,
    /// The camera's motion gate; `None` runs the detector on every frame.
    pub motion: Option<crate::motion::MotionConfig>,
    /// Inference threads working on this camera's consecutive frames, each
    /// with its own tract state on the shared model; results are published in frame order.
    pub workers: usize,
}

/// Width and height of a frame in pixels, each from 1 to [`FrameSize::MAX_SIDE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

impl FrameSize {
    /// Maximum width or height, so that one RGB frame buffer is at most
    /// 16384 × 16384 × 3 bytes (768 MiB).
    pub const MAX_SIDE: u32 = 16384;

    /// Returns `None` when a side is 0 or above [`FrameSize::MAX_SIDE`].
    pub fn new(width: u32, height: u32) -> Option<FrameSize> {
        let valid = |side: u32| (1..=FrameSize::MAX_SIDE).contains(&side);
        (valid(width) && valid(height)).then_some(FrameSize { width, height })
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Returns whether a camera `path` is a URL such as `rtsp://camera/stream`
/// rather than a file path: a scheme of letters, digits, `+`, `-` or `.`,
/// starting with a letter, followed by `://`.
pub fn is_url(path: &Path) -> bool {
    let Some(text) = path.to_str() else {
        return false;
    };
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut characters = scheme.chars();
    characters.next().is_some_and(|first| first.is_ascii_alphabetic())
        && characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or is invalid; the
    /// message names the file, the key and, where there is one, the line.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_text(path, &text)
    }

    /// Validates `text`, the contents of the config file at `path`. Relative
    /// paths in it are resolved against the directory of `path`.
    ///
    /// # Errors
    /// As [`Config::load`], except for reading.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::parse(path, text)?;
        Config::from_file(path, text, file)
    }

    /// Resolves and cross-checks a parsed file. `text` is the file's
    /// contents, used to turn the spans in `file` into line numbers.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that breaks a rule.
    pub fn from_file(path: &Path, text: &str, file: ConfigFile) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));

        let device_id = match file.device.id {
            Some(id) => id.to_string(),
            None => device_id_from_host_name(path)?,
        };
        let mqtt = resolve_mqtt(path, text, file.mqtt, &device_id)?;
        let cameras = resolve_cameras(path, text, base, file.cameras)?;

        let model = resolve_model(base, file.model);
        let thermal = file.thermal.map(|thermal| resolve_thermal(path, base, thermal)).transpose()?;

        Ok(Config {
            path: path.to_path_buf(),
            device_id,
            exit_when_done: file.daemon.exit_when_done,
            model,
            mqtt,
            cameras,
            thermal,
        })
    }

    /// Checks that the model files and frame source paths exist, and that
    /// each source path is a file or a folder as its `source` key requires.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing path and the key that names it.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.require_model_files("model", &self.model.spec)?;
        for camera in &self.cameras {
            if let Some(model) = &camera.model {
                self.require_model_files(&format!("cameras {:?} model", camera.name), &model.spec)?;
            }
        }

        for camera in &self.cameras {
            // A device that is not plugged in yet is retried while the daemon
            // runs, and an rpicam camera index is no path.
            let no_file = matches!(camera.source, SourceKind::Device | SourceKind::Rpicam);
            if no_file || (camera.source == SourceKind::Stream && is_url(&camera.path)) {
                continue;
            }
            let key = format!("cameras {:?} path", camera.name);
            let metadata = self.require_path(&key, &camera.path)?;
            let expected_folder = camera.source == SourceKind::Folder;
            if metadata.is_dir() != expected_folder {
                let found = if metadata.is_dir() { "a folder" } else { "not a folder" };
                return Err(ConfigError::unlocated(
                    &self.path,
                    format!(
                        "{key} {} is {found}, but source = {:?} expects {}",
                        camera.path.display(),
                        camera.source.as_str(),
                        match camera.source {
                            SourceKind::Image => "an image file",
                            SourceKind::Folder => "a folder",
                            SourceKind::Stream => "a video file or a URL",
                            SourceKind::Device => "a device node",
                            SourceKind::Rpicam => "a camera index",
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the files of the model table named `table`, such as `model`.
    fn require_model_files(&self, table: &str, spec: &ModelSpec) -> Result<(), ConfigError> {
        self.require_path(&format!("{table}.path"), &spec.path)?;
        if let Some(weights) = &spec.weights {
            self.require_path(&format!("{table}.weights"), weights)?;
        }
        if let Some(names) = &spec.names {
            self.require_path(&format!("{table}.names"), names)?;
        }
        if let Some(samples) = &spec.samples {
            self.require_path(&format!("{table}.samples"), samples)?;
        }
        if spec.precision == crate::model::Precision::Int8.into() {
            if spec.is_onnx() {
                return Err(ConfigError::Unlocated {
                    path: self.path.clone(),
                    message: format!(
                        "{table}.precision = \"int8\" needs a darknet cfg and weights, but {table}.path is an ONNX file"
                    ),
                });
            }
            let calibration = spec.quantization_path();
            if !calibration.exists() {
                let key = if spec.quantization.is_some() { "quantization" } else { "precision" };
                return Err(ConfigError::Unlocated {
                    path: self.path.clone(),
                    message: format!(
                        "{table}.{key}: int8 needs the calibration file {}, which does not exist: create it with `edgedet quantize --model {} --calibrate FOLDER_OF_FRAMES`",
                        calibration.display(),
                        spec.path.display()
                    ),
                });
            }
        }
        Ok(())
    }

    fn require_path(&self, key: &str, target: &Path) -> Result<std::fs::Metadata, ConfigError> {
        std::fs::metadata(target).map_err(|source| ConfigError::MissingFile {
            path: self.path.clone(),
            key: key.to_string(),
            target: target.to_path_buf(),
            source,
        })
    }
}

impl ConfigFile {
    /// Parses the TOML `text` of the config file at `path`, without resolving or cross-checking it.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for TOML syntax errors, unknown keys, values
    /// of the wrong type and values out of range, with the key and line.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|error| toml_error(path, text, &error, None))?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = key_path(error.path());
            toml_error(path, text, error.inner(), Some(&key))
        })
    }
}

/// Writes a serde path as a TOML key such as `cameras[0].name`, leaving out
/// the internal field names through which `toml::Spanned` deserializes.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;

    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if name.starts_with("$__serde_spanned") {
                    continue;
                }
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Unknown => {}
        }
    }
    key
}

/// Converts a toml error into a one-line [`ConfigError`]: toml's own
/// `Display` spreads over several lines with a source excerpt, which does not
/// suit a log line.
fn toml_error(path: &Path, text: &str, error: &toml::de::Error, key: Option<&str>) -> ConfigError {
    let message = error.message().trim_end();
    let message = match key {
        Some(key) if !key.is_empty() => format!("{key}: {message}"),
        _ => message.to_string(),
    };
    match error.span() {
        // toml gives a missing top-level key an empty span at 0 or a span over
        // the whole document. Either would point at line 1 for no reason.
        Some(span) if !(span.start == 0 && (span.end == 0 || span.end >= text.trim_end().len())) => {
            ConfigError::at(path, text, span, message)
        }
        _ => ConfigError::unlocated(path, message),
    }
}

fn device_id_from_host_name(path: &Path) -> Result<String, ConfigError> {
    let host_name = gethostname::gethostname().to_string_lossy().into_owned();
    TopicLevel::try_from(host_name.clone()).map(|id| id.to_string()).map_err(|reason| {
        ConfigError::unlocated(
            path,
            format!("device.id is not set and the host name {host_name:?} cannot replace it ({reason}): set device.id"),
        )
    })
}

fn resolve_mqtt(path: &Path, text: &str, mqtt: MqttSection, device_id: &str) -> Result<MqttConfig, ConfigError> {
    require_embedded_broker(path, text, &mqtt.embedded_broker, EMBEDDED_BROKER_BUILT)?;
    let embedded_broker = *mqtt.embedded_broker.get_ref();

    let host = mqtt.host.get_ref().trim().to_string();
    if host.is_empty() {
        return Err(ConfigError::at(path, text, mqtt.host.span(), "mqtt.host: expected a host name or IP address"));
    }
    if embedded_broker && host.parse::<IpAddr>().is_err() {
        return Err(ConfigError::at(
            path,
            text,
            mqtt.host.span(),
            format!("mqtt.host: {host:?} is not an IP address, which embedded_broker = true needs to listen on"),
        ));
    }

    let credentials = match (mqtt.username, mqtt.password) {
        (Some(username), password) => {
            Some(Credentials { username, password: password.map(|p| p.into_inner()).unwrap_or_default() })
        }
        (None, Some(password)) => {
            return Err(ConfigError::at(path, text, password.span(), "mqtt.password is set but mqtt.username is not"));
        }
        (None, None) => None,
    };

    let client_id = match mqtt.client_id {
        Some(client_id) if client_id.is_empty() => {
            return Err(ConfigError::unlocated(path, "mqtt.client_id: expected a non-empty client id"));
        }
        Some(client_id) => client_id,
        None => format!("edgedet-{device_id}"),
    };

    let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    Ok(MqttConfig {
        host,
        port: mqtt.port.get(),
        embedded_broker,
        client_id,
        credentials,
        qos: mqtt.qos,
        keep_alive: seconds(u64::from(mqtt.keep_alive_s)),
        topic_prefix: mqtt.topic_prefix.to_string(),
        stats_interval: seconds(mqtt.stats_interval_s),
        max_queued: mqtt.max_queued.get(),
        reconnect_max: Duration::from_secs(mqtt.reconnect_max_s.get()),
    })
}

/// Whether this build contains the embedded broker (the cargo feature `embedded-broker`).
const EMBEDDED_BROKER_BUILT: bool = cfg!(feature = "embedded-broker");

/// Rejects `embedded_broker = true`, located by `key`, when `broker_built`
/// is false. A daemon without the broker would have nothing to publish to,
/// so this is a config error that `edgedet check` reports too, rather than
/// a failure once the model has loaded.
fn require_embedded_broker(
    path: &Path,
    text: &str,
    key: &toml::Spanned<bool>,
    broker_built: bool,
) -> Result<(), ConfigError> {
    if broker_built || !*key.get_ref() {
        return Ok(());
    }
    Err(ConfigError::at(
        path,
        text,
        key.span(),
        "mqtt.embedded_broker = true, but this edgedet was built without the embedded broker \
         (cargo feature embedded-broker): set mqtt.embedded_broker = false and point mqtt.host at an MQTT broker, \
         or rebuild edgedet with that feature",
    ))
}

fn resolve_cameras(
    path: &Path,
    text: &str,
    base: &Path,
    cameras: toml::Spanned<Vec<toml::Spanned<CameraSection>>>,
) -> Result<Vec<CameraConfig>, ConfigError> {
    if cameras.get_ref().is_empty() {
        return Err(ConfigError::at(path, text, cameras.span(), "cameras: expected at least one [[cameras]] entry"));
    }

    let mut resolved: Vec<CameraConfig> = Vec::with_capacity(cameras.get_ref().len());
    for (index, camera) in cameras.into_inner().into_iter().enumerate() {
        let span = camera.span();
        let camera = camera.into_inner();
        let name = camera.name.get_ref().to_string();

        if resolved.iter().any(|earlier| earlier.name == name) {
            return Err(ConfigError::at(
                path,
                text,
                camera.name.span(),
                format!("cameras[{index}].name: {name:?} is used by an earlier camera; names must be unique"),
            ));
        }

        let frame_interval = match (camera.interval_ms, camera.fps) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    path,
                    text,
                    span,
                    format!("cameras[{index}] ({name:?}): set interval_ms or fps, not both"),
                ));
            }
            (Some(0), None) | (None, None) => None,
            (Some(ms), None) => Some(Duration::from_millis(ms)),
            (None, Some(fps)) => Some(Duration::from_secs_f64(1.0 / fps.get())),
        };

        let is_stream = camera.source == SourceKind::Stream;
        let is_device = camera.source == SourceKind::Device;
        let is_rpicam = camera.source == SourceKind::Rpicam;
        if !is_stream && !is_device && !is_rpicam && (camera.width.is_some() || camera.height.is_some()) {
            return Err(ConfigError::at(
                path,
                text,
                span,
                format!(
                    "cameras[{index}] ({name:?}): width and height apply only to source = \"stream\", \"device\" and \"rpicam\""
                ),
            ));
        }
        if !is_stream && camera.realtime {
            return Err(ConfigError::at(
                path,
                text,
                span,
                format!("cameras[{index}] ({name:?}): realtime applies only to source = \"stream\""),
            ));
        }
        let pixel_format = match &camera.pixel_format {
            None => None,
            Some(_) if !is_device => {
                return Err(ConfigError::at(
                    path,
                    text,
                    span,
                    format!("cameras[{index}] ({name:?}): pixel_format applies only to source = \"device\""),
                ));
            }
            Some(fourcc) => Some(fourcc.parse::<crate::convert::PixelFormat>().map_err(|error| {
                ConfigError::at(path, text, span.clone(), format!("cameras[{index}] ({name:?}): pixel_format: {error}"))
            })?),
        };
        let frame_size = match (camera.width, camera.height) {
            (None, None) => None,
            (Some(width), Some(height)) => Some(FrameSize::new(width.get(), height.get()).ok_or_else(|| {
                ConfigError::at(
                    path,
                    text,
                    span.clone(),
                    format!(
                        "cameras[{index}] ({name:?}): invalid frame size {width}x{height}: expected width and height from 1 to {}",
                        FrameSize::MAX_SIDE
                    ),
                )
            })?),
            _ => {
                return Err(ConfigError::at(
                    path,
                    text,
                    span,
                    format!("cameras[{index}] ({name:?}): set both width and height, or neither"),
                ));
            }
        };

        if let Some(size) = frame_size.filter(|size| is_rpicam && (size.width % 2 != 0 || size.height % 2 != 0)) {
            return Err(ConfigError::at(
                path,
                text,
                span,
                format!(
                    "cameras[{index}] ({name:?}): invalid frame size {size}: source = \"rpicam\" delivers YUV 4:2:0, which needs an even width and height"
                ),
            ));
        }

        let rpicam_args = match camera.rpicam_args {
            None => Vec::new(),
            Some(args) if !is_rpicam => {
                return Err(ConfigError::at(
                    path,
                    text,
                    args.span(),
                    format!("cameras[{index}] ({name:?}): rpicam_args applies only to source = \"rpicam\""),
                ));
            }
            Some(args) => {
                if let Some((argument, reason)) =
                    args.get_ref().iter().find_map(|argument| Some((argument, rpicam_argument_conflict(argument)?)))
                {
                    return Err(ConfigError::at(
                        path,
                        text,
                        args.span(),
                        format!("cameras[{index}] ({name:?}): rpicam_args: {argument:?} {reason}"),
                    ));
                }
                args.into_inner()
            }
        };

        // A URL and a camera index are not paths, so they are not resolved
        // against the config's directory.
        let source_path = if is_rpicam {
            if !is_camera_index(&camera.path) {
                return Err(ConfigError::at(
                    path,
                    text,
                    span,
                    format!(
                        "cameras[{index}] ({name:?}): path {:?} is not a camera index: source = \"rpicam\" takes the index that `rpicam-hello --list-cameras` prints, such as \"0\"",
                        camera.path.display().to_string()
                    ),
                ));
            }
            camera.path.clone()
        } else if is_stream && is_url(&camera.path) {
            camera.path.clone()
        } else {
            base.join(&camera.path)
        };

        resolved.push(CameraConfig {
            name,
            source: camera.source,
            path: source_path,
            looping: camera.looping,
            frame_interval,
            frame_size,
            realtime: camera.realtime,
            pixel_format,
            rpicam_args,
            model: camera.model.map(|model| resolve_model(base, model)),
            motion: camera.motion.map(|motion| crate::motion::MotionConfig {
                threshold: motion.threshold,
                min_area: motion.min_area.get(),
                refresh: Duration::from_secs(motion.refresh_s.get()),
            }),
            workers: camera.workers.get(),
        });
    }
    Ok(resolved)
}

/// Resolves a `[model]` table, or a camera's own `model` table, against the config file's directory.
fn resolve_thermal(
    path: &Path,
    base: &Path,
    thermal: file::ThermalSection,
) -> Result<crate::thermal::ThermalConfig, ConfigError> {
    if thermal.cool_c.partial_cmp(&thermal.hot_c) != Some(std::cmp::Ordering::Less) {
        return Err(ConfigError::Unlocated {
            path: path.to_path_buf(),
            message: format!(
                "thermal.cool_c ({}) must be below thermal.hot_c ({}), so that the rate does not flap around one temperature",
                thermal.cool_c, thermal.hot_c
            ),
        });
    }
    Ok(crate::thermal::ThermalConfig {
        temperature_file: base.join(thermal.temperature_file),
        throttled_file: base.join(thermal.throttled_file),
        hot_c: thermal.hot_c,
        cool_c: thermal.cool_c,
        hot_interval: Duration::from_millis(thermal.hot_interval_ms.get()),
        poll: Duration::from_secs(thermal.poll_s.get()),
    })
}

fn resolve_model(base: &Path, model: file::ModelSection) -> ModelConfig {
    ModelConfig {
        spec: ModelSpec {
            path: base.join(&model.path),
            weights: model.weights.map(|weights| base.join(weights)),
            names: model.names.map(|names| base.join(names)),
            size: model.size,
            precision: model.precision,
            quantization: model.quantization.map(|path| base.join(path)),
            threads: model.threads.map(std::num::NonZeroUsize::get),
            samples: model.samples.map(|path| base.join(path)),
        },
        detector: DetectorOptions { threshold: model.threshold.get(), nms_threshold: model.nms_threshold.get() },
    }
}

/// Returns whether `path` is an rpicam camera index: decimal digits that fit in a `u32`.
fn is_camera_index(path: &Path) -> bool {
    path.to_str().is_some_and(|text| {
        !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) && text.parse::<u32>().is_ok()
    })
}

/// rpicam-vid options that edgedet sets itself, with their one-letter
/// aliases and the reason they may not appear in `rpicam_args`.
const RPICAM_OPTIONS_SET: [(&str, Option<char>, &str); 9] = [
    ("camera", None, "is set from path"),
    ("width", None, "is set from width and height"),
    ("height", None, "is set from width and height"),
    ("framerate", None, "is set from fps or interval_ms"),
    ("codec", None, "is set by edgedet, which reads raw YUV 4:2:0 frames"),
    ("output", Some('o'), "is set by edgedet, which reads the frames from rpicam-vid's stdout"),
    ("timeout", Some('t'), "is set by edgedet, which runs rpicam-vid until it stops the camera"),
    ("nopreview", Some('n'), "is set by edgedet"),
    ("flush", None, "is set by edgedet"),
];

/// rpicam-vid options that change, pause or end what it writes to stdout,
/// or that read further options from a file.
const RPICAM_OPTIONS_BREAKING: [(&str, Option<char>); 13] = [
    ("segment", None),
    ("split", None),
    ("circular", None),
    ("listen", Some('l')),
    ("frames", None),
    ("initial", Some('i')),
    ("keypress", Some('k')),
    ("signal", Some('s')),
    ("metadata", None),
    ("config", Some('c')),
    ("help", Some('h')),
    ("version", None),
    ("list-cameras", None),
];

/// Returns why `argument` may not be one of `rpicam_args`, or `None` when it may.
/// rpicam-vid's option parser takes `--name value`, `--name=value`, `-x value`
/// and `-xvalue`, so all four forms are recognised.
fn rpicam_argument_conflict(argument: &str) -> Option<&'static str> {
    const BREAKING: &str = "would change or stop the raw frames that edgedet reads from rpicam-vid's stdout";

    let matches = |long: &str, short: Option<char>| {
        let long_match = argument
            .strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.strip_prefix(long).is_some_and(|value| value.starts_with('=')));
        let short_match = short.is_some_and(|letter| {
            let mut characters = argument.chars();
            characters.next() == Some('-') && characters.next() == Some(letter)
        });
        long_match || short_match
    };
    RPICAM_OPTIONS_SET
        .iter()
        .find(|(long, short, _)| matches(long, *short))
        .map(|(_, _, reason)| *reason)
        .or_else(|| RPICAM_OPTIONS_BREAKING.iter().any(|(long, short)| matches(long, *short)).then_some(BREAKING))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[model]
path = "yolo/yolov4-tiny.cfg"

[[cameras]]
name = "door"
source = "image"
path = "images/door.jpg"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new("/etc/edgedet/edgedet.toml"), text)
    }

    #[test]
    fn camera_model_table_is_resolved_like_model() {
        let text = format!("{MINIMAL}[cameras.model]\npath = \"big/yolov4.cfg\"\nthreshold = 0.5\n");
        let config = parse(&text).unwrap();
        let own = config.cameras[0].model.as_ref().expect("the camera's own model");
        assert_eq!(own.spec.path, Path::new("/etc/edgedet/big/yolov4.cfg"));
        assert_eq!(own.detector.threshold, 0.5);
        assert_eq!(own.detector.nms_threshold, 0.45);
        assert_eq!(config.model.spec.path, Path::new("/etc/edgedet/yolo/yolov4-tiny.cfg"));
    }

    #[test]
    fn camera_without_model_table_shares_model() {
        assert_eq!(parse(MINIMAL).unwrap().cameras[0].model, None);
    }

    #[test]
    fn camera_model_unknown_key_names_line() {
        let text = format!("{MINIMAL}[cameras.model]\npath = \"big/yolov4.cfg\"\nthresh = 0.5\n");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("edgedet.toml:11:1: cameras[0].model.thresh: unknown field `thresh`"), "{message}");
    }

    #[test]
    fn relative_paths_resolve_against_config_directory() {
        let config = parse(MINIMAL).expect("minimal config is valid");
        assert_eq!(config.model.spec.path, Path::new("/etc/edgedet/yolo/yolov4-tiny.cfg"));
        assert_eq!(config.cameras[0].path, Path::new("/etc/edgedet/images/door.jpg"));
    }

    #[test]
    fn client_id_defaults_to_device_id() {
        let text = format!("[device]\nid = \"porch\"\n{MINIMAL}");
        let config = parse(&text).expect("config is valid");
        assert_eq!(config.device_id, "porch");
        assert_eq!(config.mqtt.client_id, "edgedet-porch");
    }

    #[test]
    fn fps_becomes_frame_interval() {
        let text = MINIMAL.replace("path = \"images/door.jpg\"", "path = \"images/door.jpg\"\nfps = 4.0");
        let config = parse(&text).expect("config is valid");
        assert_eq!(config.cameras[0].frame_interval, Some(Duration::from_millis(250)));
    }

    #[test]
    fn password_without_username_is_rejected() {
        let text = format!("{MINIMAL}\n[mqtt]\npassword = \"secret\"\n");
        let message = parse(&text).expect_err("password alone is invalid").to_string();
        assert!(message.contains("mqtt.password"), "{message}");
        assert!(message.contains(":11:"), "{message}");
    }

    #[test]
    fn credentials_debug_hides_password() {
        let credentials = Credentials { username: "user".into(), password: "secret".into() };
        assert!(!format!("{credentials:?}").contains("secret"));
    }

    #[test]
    fn stream_url_is_kept_as_is() {
        let text = MINIMAL
            .replace("source = \"image\"", "source = \"stream\"")
            .replace("images/door.jpg", "rtsp://192.0.2.10/stream1");
        let config = parse(&text).expect("stream config is valid");
        assert_eq!(config.cameras[0].path, Path::new("rtsp://192.0.2.10/stream1"));
        assert_eq!(config.cameras[0].frame_size, None);
        assert!(!config.cameras[0].realtime);
    }

    #[test]
    fn stream_file_resolves_against_config_directory() {
        let text = MINIMAL
            .replace("source = \"image\"", "source = \"stream\"")
            .replace("\"images/door.jpg\"", "\"videos/yard.mp4\"\nwidth = 640\nheight = 360\nrealtime = true");
        let config = parse(&text).expect("stream config is valid");
        assert_eq!(config.cameras[0].path, Path::new("/etc/edgedet/videos/yard.mp4"));
        assert_eq!(config.cameras[0].frame_size, FrameSize::new(640, 360));
        assert!(config.cameras[0].realtime);
    }

    #[test]
    fn stream_width_needs_height() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"stream\"\nwidth = 640");
        let message = parse(&text).expect_err("width alone is invalid").to_string();
        assert!(message.contains("set both width and height, or neither"), "{message}");
    }

    #[test]
    fn stream_size_is_limited() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"stream\"\nwidth = 20000\nheight = 10");
        let message = parse(&text).expect_err("width 20000 is invalid").to_string();
        assert!(message.contains("invalid frame size 20000x10"), "{message}");
    }

    #[test]
    fn stream_keys_are_rejected_on_images() {
        for key in ["width = 640\nheight = 360", "realtime = true"] {
            let text = MINIMAL.replace("source = \"image\"", &format!("source = \"image\"\n{key}"));
            let message = parse(&text).expect_err("stream keys on an image source are invalid").to_string();
            assert!(message.contains("only to source = \"stream\""), "{key}: {message}");
        }
    }

    #[test]
    fn device_takes_size_and_pixel_format() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"device\"").replace(
            "\"images/door.jpg\"",
            "\"/dev/v4l/by-id/usb-cam-video-index0\"\nwidth = 1280\nheight = 720\npixel_format = \"MJPG\"",
        );
        let config = parse(&text).expect("device config is valid");
        let camera = &config.cameras[0];
        assert_eq!(camera.source, SourceKind::Device);
        assert_eq!(camera.path, Path::new("/dev/v4l/by-id/usb-cam-video-index0"));
        assert_eq!(camera.frame_size, FrameSize::new(1280, 720));
        assert_eq!(camera.pixel_format, Some(crate::convert::PixelFormat::Mjpeg));
    }

    #[test]
    fn device_pixel_format_must_be_known() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"device\"\npixel_format = \"UYVY\"");
        let message = parse(&text).expect_err("UYVY is not supported").to_string();
        assert!(message.contains("pixel_format: unsupported V4L2 pixel format \"UYVY\""), "{message}");
    }

    #[test]
    fn pixel_format_is_rejected_on_streams() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"stream\"\npixel_format = \"YUYV\"");
        let message = parse(&text).expect_err("pixel_format on a stream is invalid").to_string();
        assert!(message.contains("pixel_format applies only to source = \"device\""), "{message}");
    }

    #[test]
    fn realtime_is_rejected_on_devices() {
        let text = MINIMAL.replace("source = \"image\"", "source = \"device\"\nrealtime = true");
        let message = parse(&text).expect_err("realtime on a device is invalid").to_string();
        assert!(message.contains("realtime applies only to source = \"stream\""), "{message}");
    }

    #[test]
    fn missing_device_passes_file_check() {
        let text =
            MINIMAL.replace("source = \"image\"", "source = \"device\"").replace("images/door.jpg", "/dev/video99");
        let mut config = parse(&text).expect("device config is valid");
        config.model.spec.path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        config.check_files().expect("a device that is not plugged in is retried, not rejected");
    }

    #[test]
    fn int8_without_its_calibration_names_the_file_and_the_command() {
        let mut config = parse(MINIMAL).expect("minimal config is valid");
        config.model.spec.path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        config.model.spec.precision = crate::model::Precision::Int8.into();
        let message = config.check_files().expect_err("no calibration beside Cargo.toml").to_string();
        let expected = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.int8.json");
        assert!(
            message.contains(&format!("model.precision: int8 needs the calibration file {}", expected.display())),
            "{message}"
        );
        assert!(message.contains("`edgedet quantize --model"), "{message}");
    }

    #[test]
    fn motion_table_sets_the_gate() {
        let text = format!("{MINIMAL}\n[cameras.motion]\nthreshold = 30\nmin_area = 0.01\nrefresh_s = 5\n");
        let config = parse(&text).expect("motion config is valid");
        let motion = config.cameras[0].motion.expect("the motion table");
        assert_eq!((motion.threshold, motion.min_area, motion.refresh), (30, 0.01, Duration::from_secs(5)));
        let without = parse(MINIMAL).expect("minimal config is valid");
        assert_eq!(without.cameras[0].motion, None);
    }

    fn rpicam(keys: &str) -> String {
        MINIMAL
            .replace("source = \"image\"", "source = \"rpicam\"")
            .replace("\"images/door.jpg\"", &format!("\"0\"\n{keys}"))
    }

    #[test]
    fn rpicam_entry_keeps_index_and_args() {
        let text =
            rpicam("width = 1280\nheight = 720\nfps = 10.0\nrpicam_args = [\"--awb\", \"daylight\", \"--ev\", \"-1\"]");
        let config = parse(&text).expect("rpicam config is valid");
        let camera = &config.cameras[0];
        assert_eq!(camera.source, SourceKind::Rpicam);
        assert_eq!(camera.path, Path::new("0"));
        assert_eq!(camera.frame_size, FrameSize::new(1280, 720));
        assert_eq!(camera.frame_interval, Some(Duration::from_millis(100)));
        assert_eq!(camera.rpicam_args, ["--awb", "daylight", "--ev", "-1"]);
    }

    #[test]
    fn rpicam_entry_defaults_are_empty() {
        let config = parse(&rpicam("")).expect("rpicam config is valid");
        assert_eq!(config.cameras[0].frame_size, None);
        assert!(config.cameras[0].rpicam_args.is_empty());
        assert_eq!(config.cameras[0].frame_interval, None);
    }

    #[test]
    fn rpicam_path_must_be_a_camera_index() {
        for path in ["front", "-1", "cam0", "99999999999"] {
            let text = rpicam("").replace("path = \"0\"", &format!("path = {path:?}"));
            let message = parse(&text).expect_err("not a camera index").to_string();
            assert_eq!(
                message,
                format!(
                    "/etc/edgedet/edgedet.toml:5:1: cameras[0] (\"door\"): path {path:?} is not a camera index: source = \"rpicam\" takes the index that `rpicam-hello --list-cameras` prints, such as \"0\""
                )
            );
        }
    }

    #[test]
    fn rpicam_size_must_be_even() {
        let message = parse(&rpicam("width = 641\nheight = 480")).expect_err("641 is odd").to_string();
        assert_eq!(
            message,
            "/etc/edgedet/edgedet.toml:5:1: cameras[0] (\"door\"): invalid frame size 641x480: source = \"rpicam\" delivers YUV 4:2:0, which needs an even width and height"
        );
    }

    #[test]
    fn rpicam_args_are_rejected_on_other_sources() {
        let text =
            MINIMAL.replace("path = \"images/door.jpg\"", "path = \"images/door.jpg\"\nrpicam_args = [\"--hflip\"]");
        let message = parse(&text).expect_err("rpicam_args on an image source is invalid").to_string();
        assert_eq!(
            message,
            "/etc/edgedet/edgedet.toml:9:15: cameras[0] (\"door\"): rpicam_args applies only to source = \"rpicam\""
        );
    }

    #[test]
    fn rpicam_args_that_edgedet_sets_are_rejected() {
        let cases = [
            ("--width", "is set from width and height"),
            ("--height=480", "is set from width and height"),
            ("--camera", "is set from path"),
            ("--framerate", "is set from fps or interval_ms"),
            ("--codec", "is set by edgedet, which reads raw YUV 4:2:0 frames"),
            ("-o", "is set by edgedet, which reads the frames from rpicam-vid's stdout"),
            ("--output=-", "is set by edgedet, which reads the frames from rpicam-vid's stdout"),
            ("-t0", "is set by edgedet, which runs rpicam-vid until it stops the camera"),
            ("-n", "is set by edgedet"),
            ("--flush", "is set by edgedet"),
            ("--segment", "would change or stop the raw frames that edgedet reads from rpicam-vid's stdout"),
            ("--listen", "would change or stop the raw frames that edgedet reads from rpicam-vid's stdout"),
            ("-k", "would change or stop the raw frames that edgedet reads from rpicam-vid's stdout"),
            ("--metadata=-", "would change or stop the raw frames that edgedet reads from rpicam-vid's stdout"),
        ];
        for (argument, reason) in cases {
            let text = rpicam(&format!("rpicam_args = [\"--hflip\", {argument:?}]"));
            let message = parse(&text).expect_err(argument).to_string();
            assert_eq!(
                message,
                format!("/etc/edgedet/edgedet.toml:9:15: cameras[0] (\"door\"): rpicam_args: {argument:?} {reason}"),
            );
        }
    }

    #[test]
    fn rpicam_tuning_args_are_accepted() {
        let args =
            ["--rotation", "180", "--awb", "daylight", "--ev", "-0.5", "--denoise", "cdn_off", "--roi", "0,0,1,1"];
        for argument in args {
            assert_eq!(rpicam_argument_conflict(argument), None, "{argument}");
        }
        // A longer option that merely starts with a reserved name is not that option.
        assert_eq!(rpicam_argument_conflict("--frames-per-second"), None);
        assert_eq!(rpicam_argument_conflict("--timeout-x"), None);
    }

    #[test]
    fn rpicam_camera_passes_file_check() {
        let mut config = parse(&rpicam("")).expect("rpicam config is valid");
        config.model.spec.path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        config.check_files().expect("a camera index is not a file");
    }

    #[test]
    fn url_needs_scheme_and_separator() {
        assert!(is_url(Path::new("rtsp://camera/stream")));
        assert!(is_url(Path::new("http+mjpeg://camera")));
        assert!(!is_url(Path::new("/videos/a://b.mp4")));
        assert!(!is_url(Path::new("videos/yard.mp4")));
        assert!(!is_url(Path::new("1http://camera")));
    }

    #[test]
    fn embedded_broker_rejected_when_not_built() {
        let path = Path::new("/etc/edgedet/edgedet.toml");
        let text = format!("{MINIMAL}\n[mqtt]\nembedded_broker = true\n");
        let file = ConfigFile::parse(path, &text).expect("config parses");

        let error = require_embedded_broker(path, &text, &file.mqtt.embedded_broker, false)
            .expect_err("a build without the broker rejects embedded_broker = true");

        assert!(matches!(error, ConfigError::Invalid { line: 11, column: 19, .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "/etc/edgedet/edgedet.toml:11:19: mqtt.embedded_broker = true, but this edgedet was built without the \
             embedded broker (cargo feature embedded-broker): set mqtt.embedded_broker = false and point mqtt.host \
             at an MQTT broker, or rebuild edgedet with that feature"
        );
    }

    #[test]
    fn embedded_broker_accepted_when_built() {
        let path = Path::new("/etc/edgedet/edgedet.toml");
        let text = format!("{MINIMAL}\n[mqtt]\nembedded_broker = true\n");
        let file = ConfigFile::parse(path, &text).expect("config parses");

        let result = require_embedded_broker(path, &text, &file.mqtt.embedded_broker, true);

        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn embedded_broker_off_needs_no_broker_in_build() {
        let path = Path::new("/etc/edgedet/edgedet.toml");
        let file = ConfigFile::parse(path, MINIMAL).expect("config parses");

        let result = require_embedded_broker(path, MINIMAL, &file.mqtt.embedded_broker, false);

        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn embedded_broker_follows_build_features() {
        let text = format!("{MINIMAL}\n[mqtt]\nembedded_broker = true\n");

        let result = parse(&text);

        assert_eq!(result.is_ok(), cfg!(feature = "embedded-broker"), "{result:?}");
    }

    #[test]
    #[cfg_attr(not(feature = "embedded-broker"), ignore = "built without the embedded-broker feature")]
    fn embedded_broker_needs_ip_address() {
        let text = format!("{MINIMAL}\n[mqtt]\nembedded_broker = true\nhost = \"localhost\"\n");
        let message = parse(&text).expect_err("host name with embedded broker is invalid").to_string();
        assert!(message.contains("not an IP address"), "{message}");
    }
}
