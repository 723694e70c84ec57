//! Times the network-input resize of a 1920×1080 frame to 416×416 against a
//! literal port of darknet's `resize_image`, both on one thread.
//!
//! Run with `cargo bench --bench resize`. The frame is `bus.jpg` from the
//! test fixtures stretched to 1920×1080. Each timing includes the conversion
//! from 8-bit interleaved RGB to planar floats, because darknet's loader does
//! that before it resizes. The goal for `prepare_input` is at most 5 ms per
//! frame. The bench prints whether this run met it and never fails on it.

#[path = "../tests/preprocess/darknet_reference.rs"]
mod darknet_reference;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use edgedet::preprocess::{load_image, prepare_input, ResizeMode, RgbImage};
use image::imageops::FilterType;

#[path = "common/timing.rs"]
mod timing;
use timing::{median_time, milliseconds};

const FRAME_WIDTH: u32 = 1920;
const FRAME_HEIGHT: u32 = 1080;
const NET_SIDE: u32 = 416;
const GOAL: Duration = Duration::from_millis(5);

fn main() {
    let frame = test_frame();

    let stretch = median_time(200, || {
        black_box(prepare_input(black_box(&frame), NET_SIDE, NET_SIDE, ResizeMode::Stretch));
    });
    let letterbox = median_time(200, || {
        black_box(prepare_input(black_box(&frame), NET_SIDE, NET_SIDE, ResizeMode::Letterbox));
    });
    let reference = median_time(15, || {
        let image = darknet_reference::load_image_from_rgb8(black_box(&frame));
        black_box(darknet_reference::resize_image(&image, NET_SIDE as i32, NET_SIDE as i32));
    });

    let size = format!("{FRAME_WIDTH}x{FRAME_HEIGHT} -> {NET_SIDE}x{NET_SIDE}");
    let speed_up = reference.as_secs_f64() / stretch.as_secs_f64();
    let verdict = if stretch <= GOAL { "met" } else { "NOT met" };
    println!("resize {size}, median of repeated runs on one thread");
    println!("  {:<32}{:>8.3} ms", "prepare_input, stretch:", milliseconds(stretch));
    println!("  {:<32}{:>8.3} ms", "prepare_input, letterbox:", milliseconds(letterbox));
    println!("  {:<32}{:>8.3} ms", "literal darknet port, stretch:", milliseconds(reference));
    println!("  {:<32}{:>8.1}x", "speed-up over the port:", speed_up);
    println!("  {:<32}{:>8}", format!("goal of {} ms for stretch:", GOAL.as_millis()), verdict);
}

/// Loads `bus.jpg` and stretches it to 1920×1080, a typical camera frame.
fn test_frame() -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/bus.jpg");
    match load_image(&path) {
        Ok(photo) => image::imageops::resize(&photo, FRAME_WIDTH, FRAME_HEIGHT, FilterType::Triangle),
        Err(error) => panic!("loading {}: {error}", path.display()),
    }
}
