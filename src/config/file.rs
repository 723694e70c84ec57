//! The config file's layout as serde reads it, one struct per TOML table.
//!
//! These structs contain the file's values, with defaults filled in. They do
//! not resolve the host name or relative paths and do not check rules across
//! keys: [`super::Config::from_file`] does that. The field defaults here must
//! match the commented default config `default.toml`, and a test checks that.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{FrameRate, Port, Qos, TopicLevel, TopicPrefix, UnitInterval};
use crate::model::{InputSize, PrecisionSetting};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub device: DeviceSection,
    #[serde(default)]
    pub daemon: DaemonSection,
    pub model: ModelSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    /// Slows detection down while the CPU is hot; absent, rates stay as configured.
    #[serde(default)]
    pub thermal: Option<ThermalSection>,
    pub cameras: Spanned<Vec<Spanned<CameraSection>>>,
}

/// `[thermal]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThermalSection {
    pub temperature_file: PathBuf,
    pub throttled_file: PathBuf,
    pub hot_c: f32,
    pub cool_c: f32,
    pub hot_interval_ms: NonZeroU64,
    pub poll_s: NonZeroU64,
}

impl Default for ThermalSection {
    fn default() -> Self {
        let defaults = crate::thermal::ThermalConfig::default();
        ThermalSection {
            temperature_file: defaults.temperature_file,
            throttled_file: defaults.throttled_file,
            hot_c: defaults.hot_c,
            cool_c: defaults.cool_c,
            hot_interval_ms: NonZeroU64::new(defaults.hot_interval.as_millis() as u64).expect("the default is not 0"),
            poll_s: NonZeroU64::new(defaults.poll.as_secs()).expect("the default is not 0"),
        }
    }
}

/// `[device]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Device id in topics; the host name when absent.
    pub id: Option<TopicLevel>,
}

/// `[daemon]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    pub exit_when_done: bool,
}

/// `[model]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: PathBuf,
    #[serde(default)]
    pub weights: Option<PathBuf>,
    #[serde(default)]
    pub names: Option<PathBuf>,
    #[serde(default)]
    pub size: Option<InputSize>,
    #[serde(default)]
    pub precision: PrecisionSetting,
    #[serde(default)]
    pub quantization: Option<PathBuf>,
    #[serde(default)]
    pub threads: Option<NonZeroUsize>,
    #[serde(default)]
    pub samples: Option<PathBuf>,
    #[serde(default = "default_threshold")]
    pub threshold: UnitInterval,
    #[serde(default = "default_nms_threshold")]
    pub nms_threshold: UnitInterval,
}

impl ModelSection {
    /// Builds a model section with only the required path set and every other key at its default.
    pub fn with_path(path: impl Into<PathBuf>) -> ModelSection {
        ModelSection {
            path: path.into(),
            weights: None,
            names: None,
            size: None,
            precision: PrecisionSetting::default(),
            quantization: None,
            threads: None,
            samples: None,
            threshold: default_threshold(),
            nms_threshold: default_nms_threshold(),
        }
    }
}

fn default_threshold() -> UnitInterval {
    UnitInterval::try_from(0.25).expect("0.25 is within 0..=1")
}

fn default_nms_threshold() -> UnitInterval {
    UnitInterval::try_from(0.45).expect("0.45 is within 0..=1")
}

/// `[mqtt]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    pub host: Spanned<String>,
    pub port: Port,
    /// Spanned, so that a build without the broker can point at the line.
    pub embedded_broker: Spanned<bool>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Spanned<String>>,
    pub qos: Qos,
    /// Seconds; 0 turns keep-alive off. MQTT carries it as a 16-bit number.
    pub keep_alive_s: u16,
    pub topic_prefix: TopicPrefix,
    /// Seconds; 0 turns stats off.
    pub stats_interval_s: u64,
    pub max_queued: NonZeroUsize,
    pub reconnect_max_s: NonZeroU64,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            host: Spanned::new(0..0, "127.0.0.1".to_string()),
            port: Port::new(1883).expect("1883 is not 0"),
            embedded_broker: Spanned::new(0..0, false),
            client_id: None,
            username: None,
            password: None,
            qos: Qos::AtMostOnce,
            keep_alive_s: 30,
            topic_prefix: TopicPrefix::try_from("edgedet".to_string()).expect("edgedet is a valid prefix"),
            stats_interval_s: 60,
            max_queued: NonZeroUsize::new(100).expect("100 is not 0"),
            reconnect_max_s: NonZeroU64::new(30).expect("30 is not 0"),
        }
    }
}

/// `[[cameras]]`: one frame source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSection {
    pub name: Spanned<TopicLevel>,
    pub source: SourceKind,
    pub path: PathBuf,
    #[serde(default, rename = "loop")]
    pub looping: bool,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub fps: Option<FrameRate>,
    /// Frame width of a `stream`, `device` or `rpicam` source in pixels; set together with `height`.
    #[serde(default)]
    pub width: Option<NonZeroU32>,
    /// Frame height of a `stream`, `device` or `rpicam` source in pixels; set together with `width`.
    #[serde(default)]
    pub height: Option<NonZeroU32>,
    /// Whether a `stream` source reads its input at the input's own frame rate.
    #[serde(default)]
    pub realtime: bool,
    /// V4L2 fourcc that a `device` source must capture, such as `YUYV`.
    #[serde(default)]
    pub pixel_format: Option<String>,
    /// Further arguments that an `rpicam` source passes to rpicam-vid, such as `["--rotation", "180"]`.
    #[serde(default)]
    pub rpicam_args: Option<Spanned<Vec<String>>>,
    /// The camera's own model, with the keys of `[model]`. Without it the
    /// camera shares the `[model]` instance with the other cameras.
    #[serde(default)]
    pub model: Option<ModelSection>,
    /// Run the detector only on frames with motion (and at `refresh_s` intervals).
    #[serde(default)]
    pub motion: Option<MotionSection>,
    /// Inference threads working on this camera's consecutive frames.
    #[serde(default = "one_worker")]
    pub workers: NonZeroUsize,
}

fn one_worker() -> NonZeroUsize {
    NonZeroUsize::MIN
}

/// `[cameras.motion]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionSection {
    pub threshold: u8,
    pub min_area: UnitInterval,
    pub refresh_s: NonZeroU64,
}

impl Default for MotionSection {
    fn default() -> Self {
        let defaults = crate::motion::MotionConfig::default();
        MotionSection {
            threshold: defaults.threshold,
            min_area: UnitInterval::try_from(f64::from(defaults.min_area)).expect("the default is within 0 to 1"),
            refresh_s: NonZeroU64::new(defaults.refresh.as_secs()).expect("the default is not 0"),
        }
    }
}

/// Kind of input that a camera's `path` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// One JPEG or PNG file.
    Image,
    /// The JPEG and PNG files of a folder, in name order.
    Folder,
    /// A video file or a network stream URL, decoded by an `ffmpeg` process.
    Stream,
    /// A V4L2 capture device such as a USB webcam.
    Device,
    /// A Raspberry Pi camera module, captured by an `rpicam-vid` process.
    Rpicam,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Image => "image",
            SourceKind::Folder => "folder",
            SourceKind::Stream => "stream",
            SourceKind::Device => "device",
            SourceKind::Rpicam => "rpicam",
        }
    }
}
