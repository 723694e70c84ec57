//! Helpers shared by the integration tests. Each test crate uses only some of
//! them, so unused ones are allowed here rather than warned about per crate.
#![allow(dead_code)]

pub mod ffmpeg;
pub mod mosquitto;
pub mod yolo;
