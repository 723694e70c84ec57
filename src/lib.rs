//! edgedet: YOLOv4-family object detection on the CPU for edge boards, with
//! detections published over MQTT.
//!
//! The modules follow the pipeline, one step each:
//! `frame_source` (images, video files and streams; V4L2 cameras come next) → `preprocess` (decode, resize to the
//! network input) → `model` (darknet cfg/weights and ONNX on tract) → `decode`
//! (YOLO heads, NMS) → `publish` (MQTT). `detector` glues the middle three for
//! one frame; `daemon` runs the whole pipeline under a `config`; `cli` is the
//! command line on top; `draw` annotates images for people to look at.

pub mod cli;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod decode;
pub mod detection;
pub mod detector;
pub mod draw;
pub mod frame_source;
pub mod model;
pub mod motion;
pub mod preprocess;
pub mod publish;
pub mod thermal;
