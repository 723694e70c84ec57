//! The JSON messages that the daemon publishes, as serde structs.
//!
//! Field names and nesting here are the wire format that subscribers parse;
//! renaming a field is a breaking change and needs a new [`PAYLOAD_VERSION`].
//! Status messages are the plain strings [`ONLINE`] and [`OFFLINE`], not JSON.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::detection::{Detection, FrameDetections, StageTimings};

/// Layout version carried in every JSON message as `version`.
pub const PAYLOAD_VERSION: u32 = 1;

/// Retained status payload of a running device or camera.
pub const ONLINE: &str = "online";
/// Retained status payload of a stopped device or camera, and the device's last will.
pub const OFFLINE: &str = "offline";

/// Published on `<prefix>/<device>/<camera>/detections` for every processed frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionsPayload {
    /// [`PAYLOAD_VERSION`].
    pub version: u32,
    /// Capture time in UTC, RFC 3339 with milliseconds: `2024-05-01T12:00:00.123Z`.
    pub timestamp: String,
    /// Capture time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Frame sequence number within the camera's source, from 0.
    pub frame: u64,
    pub camera: String,
    /// Name of the frame in its source, such as the file name `bus.jpg`.
    pub image: String,
    /// Model name, input size and precision: `yolov4-tiny 416x416 f32`.
    pub model: String,
    /// Network input size in pixels.
    pub input: InputSize,
    /// Size of the frame in pixels; boxes are in this frame's pixels.
    pub width: u32,
    pub height: u32,
    /// Milliseconds spent in each step, rounded to microseconds.
    pub timings_ms: StageTimings,
    pub detections: Vec<Detection>,
}

/// Width and height in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSize {
    pub width: u32,
    pub height: u32,
}

/// Origin of a frame, for [`DetectionsPayload::new`].
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo<'a> {
    pub camera: &'a str,
    pub image: &'a str,
    pub sequence: u64,
    pub captured_at: SystemTime,
}

impl DetectionsPayload {
    /// Builds the payload of one frame; `result.timings_ms.decode` should
    /// already hold the decode time, which the detector does not measure.
    pub fn new(frame: FrameInfo<'_>, model: &str, input: InputSize, result: FrameDetections) -> DetectionsPayload {
        let (timestamp, timestamp_ms) = timestamp_fields(frame.captured_at);
        let timings = result.timings_ms;
        DetectionsPayload {
            version: PAYLOAD_VERSION,
            timestamp,
            timestamp_ms,
            frame: frame.sequence,
            camera: frame.camera.to_string(),
            image: frame.image.to_string(),
            model: model.to_string(),
            input,
            width: result.width,
            height: result.height,
            timings_ms: StageTimings {
                decode: round_to_microseconds(timings.decode),
                preprocess: round_to_microseconds(timings.preprocess),
                inference: round_to_microseconds(timings.inference),
                postprocess: round_to_microseconds(timings.postprocess),
            },
            detections: result.detections,
        }
    }
}

/// Published on `<prefix>/<device>/stats` every `stats_interval_s` seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsPayload {
    /// [`PAYLOAD_VERSION`].
    pub version: u32,
    /// Time of the report in UTC, RFC 3339 with milliseconds.
    pub timestamp: String,
    /// Whole seconds since the daemon started.
    pub uptime_s: u64,
    /// Model name, input size and precision: `yolov4-tiny 416x416 f32`.
    pub model: String,
    /// Numeric type the model runs in, such as `f32`.
    pub precision: String,
    /// Per camera name, in name order.
    pub cameras: BTreeMap<String, CameraStats>,
    pub mqtt: MqttStats,
    /// The adaptive detection rate; absent without `[thermal]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thermal: Option<ThermalStats>,
}

/// The CPU's last reading and whether the cameras are slowed down because of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThermalStats {
    /// Degrees Celsius; `null` when the sensor cannot be read.
    pub temperature_c: Option<f32>,
    /// The Pi firmware's throttling flags, as `vcgencmd get_throttled` prints
    /// them (`0x0`); `null` on other boards.
    pub throttled: Option<String>,
    /// Whether detection is slowed down now.
    pub slowed: bool,
    /// While slowed, the least time in milliseconds between two frames of a camera; otherwise `null`.
    pub min_interval_ms: Option<u64>,
}

/// Counters of one camera since the daemon started, and inference latency since the previous report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraStats {
    /// [`ONLINE`] while the camera's worker runs, [`OFFLINE`] after it has finished.
    pub status: String,
    /// Frames read from the source, including those that failed to decode.
    pub frames_captured: u64,
    /// Frames that went through the model.
    pub frames_processed: u64,
    /// Frames lost: undecodable files and frames the model failed on.
    pub frames_skipped: u64,
    /// Frames the motion gate kept from the detector because nothing moved;
    /// always 0 without `[cameras.motion]`.
    pub frames_without_motion: u64,
    /// Inference time of the frames processed since the previous report;
    /// `null` when there were none.
    pub inference_ms: Option<Latency>,
}

/// Percentiles of a latency, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
}

/// MQTT message counters since the daemon started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttStats {
    /// Messages written to the broker connection.
    pub published: u64,
    /// Messages discarded: queue full, too large, or queued when a connection dropped.
    pub dropped: u64,
}

/// Returns `time` as an RFC 3339 UTC string with milliseconds and as milliseconds since the Unix epoch.
pub fn timestamp_fields(time: SystemTime) -> (String, u64) {
    let text = DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true);
    // A clock set before 1970 gives 0 rather than a negative number.
    let millis = time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    (text, millis)
}

fn round_to_microseconds(milliseconds: f64) -> f64 {
    (milliseconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::detection::BoundingBox;

    fn fixed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_714_564_800_123)
    }

    #[test]
    fn detections_payload_exact_json() {
        let result = FrameDetections {
            width: 810,
            height: 1080,
            detections: vec![Detection {
                label: "person".to_string(),
                class_id: 0,
                score: 0.5,
                bbox: BoundingBox { x: 52.5, y: 389.25, w: 167.75, h: 524.5 },
            }],
            timings_ms: StageTimings { decode: 3.0, preprocess: 1.23456, inference: 40.0, postprocess: 0.5 },
        };
        let frame = FrameInfo { camera: "door", image: "bus.jpg", sequence: 7, captured_at: fixed_time() };
        let payload =
            DetectionsPayload::new(frame, "yolov4-tiny 416x416 f32", InputSize { width: 416, height: 416 }, result);

        let json = serde_json::to_string(&payload).expect("payload serializes");
        assert_eq!(
            json,
            concat!(
                r#"{"version":1,"timestamp":"2024-05-01T12:00:00.123Z","timestamp_ms":1714564800123,"#,
                r#""frame":7,"camera":"door","image":"bus.jpg","model":"yolov4-tiny 416x416 f32","#,
                r#""input":{"width":416,"height":416},"width":810,"height":1080,"#,
                r#""timings_ms":{"decode":3.0,"preprocess":1.235,"inference":40.0,"postprocess":0.5},"#,
                r#""detections":[{"label":"person","class_id":0,"score":0.5,"#,
                r#""box":{"x":52.5,"y":389.25,"w":167.75,"h":524.5}}]}"#
            )
        );
    }

    #[test]
    fn stats_payload_exact_json() {
        let mut cameras = BTreeMap::new();
        cameras.insert(
            "door".to_string(),
            CameraStats {
                status: ONLINE.to_string(),
                frames_captured: 10,
                frames_processed: 9,
                frames_skipped: 1,
                frames_without_motion: 0,
                inference_ms: Some(Latency { p50: 41.5, p95: 60.25 }),
            },
        );
        cameras.insert(
            "alley".to_string(),
            CameraStats {
                status: OFFLINE.to_string(),
                frames_captured: 0,
                frames_processed: 0,
                frames_skipped: 0,
                frames_without_motion: 0,
                inference_ms: None,
            },
        );
        let payload = StatsPayload {
            version: PAYLOAD_VERSION,
            timestamp: timestamp_fields(fixed_time()).0,
            uptime_s: 61,
            model: "yolov4-tiny 416x416 f32".to_string(),
            precision: "f32".to_string(),
            cameras,
            mqtt: MqttStats { published: 12, dropped: 3 },
            thermal: None,
        };

        let json = serde_json::to_string(&payload).expect("payload serializes");
        assert_eq!(
            json,
            concat!(
                r#"{"version":1,"timestamp":"2024-05-01T12:00:00.123Z","uptime_s":61,"#,
                r#""model":"yolov4-tiny 416x416 f32","precision":"f32","cameras":{"#,
                r#""alley":{"status":"offline","frames_captured":0,"frames_processed":0,"frames_skipped":0,"frames_without_motion":0,"inference_ms":null},"#,
                r#""door":{"status":"online","frames_captured":10,"frames_processed":9,"frames_skipped":1,"frames_without_motion":0,"inference_ms":{"p50":41.5,"p95":60.25}}},"#,
                r#""mqtt":{"published":12,"dropped":3}}"#
            )
        );
    }

    #[test]
    fn timestamp_has_milliseconds_and_zulu() {
        let (text, millis) = timestamp_fields(UNIX_EPOCH);
        assert_eq!(text, "1970-01-01T00:00:00.000Z");
        assert_eq!(millis, 0);
    }
}
