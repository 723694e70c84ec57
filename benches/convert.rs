//! Times turning one camera frame into yolov4-tiny's 416×416 input tensor,
//! per pixel format at 640×480 and 1280×720, on one thread.
//!
//! Run with `cargo bench --bench convert`. The frames are `bus.jpg` from the
//! test fixtures, resized and encoded here: YUV as BT.601 limited range,
//! MJPEG as 4:2:2 JPEG of quality 85 without its Huffman tables, as many
//! webcams send it. Each format is timed two ways in the same run:
//!
//! - edgedet: a reused `FrameConverter`, then `prepare_input` (stretch);
//! - the simplest correct path: the `image` crate's JPEG decoder (after
//!   `insert_huffman_tables`, which it needs) or a plain scalar loop for the
//!   other formats, then the literal port of darknet's `resize_image` that
//!   the resize bench also measures.
//!
//! The bench prints the median of repeated runs of the conversion alone and
//! of conversion plus resize, and how many times faster edgedet's path is.
//! When `models/yolov4-tiny/` contains the model (`models/fetch-yolov4-tiny.sh`),
//! it also times yolov4-tiny's f32 inference on one thread in the same run
//! and prints each frame path as a share of it: the goal is at most 10% at
//! 1280×720.

#[path = "../tests/preprocess/darknet_reference.rs"]
mod darknet_reference;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use edgedet::convert::{insert_huffman_tables, FrameConverter, PixelFormat, RawFrame};
use edgedet::model::{Model, ModelSpec};
use edgedet::preprocess::{load_image, prepare_input, ResizeMode, RgbImage};
use image::imageops::FilterType;

#[path = "common/timing.rs"]
mod timing;
use timing::{median_time, milliseconds};

const FRAME_SIZES: [(u32, u32); 2] = [(640, 480), (1280, 720)];
const FORMATS: [PixelFormat; 6] = [
    PixelFormat::Mjpeg,
    PixelFormat::Yuyv,
    PixelFormat::Nv12,
    PixelFormat::Yu12,
    PixelFormat::Rgb24,
    PixelFormat::Grey,
];
const NET_SIDE: u32 = 416;
const JPEG_QUALITY: i32 = 85;
/// Runs of edgedet's path, and of the simple path, which is about ten times
/// slower because of darknet's resize.
const RUNS: usize = 200;
const SIMPLE_RUNS: usize = 15;

fn main() {
    let photo = load_photo();
    let inference = time_inference(&photo);

    println!("camera frame -> {NET_SIDE}x{NET_SIDE} input, median of repeated runs on one thread, in ms");
    println!(
        "{:<8}{:>10}{:>12}{:>12}{:>12}{:>12}{:>10}{:>14}",
        "format", "size", "convert", "simple", "+ resize", "simple", "speed-up", "of inference"
    );
    for (width, height) in FRAME_SIZES {
        let still = image::imageops::resize(&photo, width, height, FilterType::Triangle);
        for format in FORMATS {
            let data = encode(format, &still);
            let frame = RawFrame::packed(format, width, height, &data);
            report(&frame, inference);
        }
    }
    match inference {
        Some(inference) => println!(
            "yolov4-tiny f32 inference: {:.3} ms; goal: frame to input at most 10% of it at 1280x720",
            milliseconds(inference)
        ),
        None => println!(
            "yolov4-tiny is not in {MODEL_DIR}: run models/fetch-yolov4-tiny.sh to compare with its inference time"
        ),
    }
}

/// Folder that `models/fetch-yolov4-tiny.sh` writes the model to.
const MODEL_DIR: &str = "models/yolov4-tiny";
/// Inference runs; each takes tens of milliseconds.
const INFERENCE_RUNS: usize = 30;

/// Median time of yolov4-tiny's inference alone on `photo`, or `None`
/// without the model files.
fn time_inference(photo: &RgbImage) -> Option<Duration> {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL_DIR).join("yolov4-tiny.cfg");
    if !cfg.with_extension("weights").is_file() {
        return None;
    }
    let spec = ModelSpec::new(cfg);
    let model = Model::load(&spec).unwrap_or_else(|error| panic!("loading {}: {error}", spec.path.display()));
    let input = prepare_input(photo, model.meta().width, model.meta().height, ResizeMode::Stretch);
    Some(median_time(INFERENCE_RUNS, || {
        black_box(model.run(black_box(&input)).expect("running yolov4-tiny"));
    }))
}

/// Times both paths for one frame and prints one row.
fn report(frame: &RawFrame<'_>, inference: Option<Duration>) {
    let mut converter = FrameConverter::new();
    let mut image = RgbImage::new(0, 0);
    let mut convert = |image: &mut RgbImage| {
        converter.convert_into(black_box(frame), image).expect("converting the frame");
    };

    let converted = median_time(RUNS, || convert(&mut image));
    let prepared = median_time(RUNS, || {
        convert(&mut image);
        black_box(prepare_input(&image, NET_SIDE, NET_SIDE, ResizeMode::Stretch));
    });

    let simple_converted = median_time(SIMPLE_RUNS, || {
        black_box(simple_to_rgb(black_box(frame)));
    });
    let simple_prepared = median_time(SIMPLE_RUNS, || {
        let rgb = simple_to_rgb(black_box(frame));
        let planar = darknet_reference::load_image_from_rgb8(&rgb);
        black_box(darknet_reference::resize_image(&planar, NET_SIDE as i32, NET_SIDE as i32));
    });

    let size = format!("{}x{}", frame.width, frame.height);
    let speed_up = simple_prepared.as_secs_f64() / prepared.as_secs_f64();
    let share = match inference {
        Some(inference) => format!("{:.1}%", 100.0 * prepared.as_secs_f64() / inference.as_secs_f64()),
        None => "-".to_string(),
    };
    println!(
        "{:<8}{size:>10}{:>12.3}{:>12.3}{:>12.3}{:>12.3}{speed_up:>9.1}x{share:>14}",
        frame.format.to_string(),
        milliseconds(converted),
        milliseconds(simple_converted),
        milliseconds(prepared),
        milliseconds(simple_prepared),
    );
}

// ---- frames -------------------------------------------------------------------------

fn load_photo() -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/bus.jpg");
    load_image(&path).unwrap_or_else(|error| panic!("loading {}: {error}", path.display()))
}

/// Encodes `still` as a frame of `format` with unpadded rows.
fn encode(format: PixelFormat, still: &RgbImage) -> Vec<u8> {
    let (width, height) = (still.width() as usize, still.height() as usize);
    let pixel = |x: usize, y: usize| still.get_pixel(x as u32, y as u32).0;
    let luma = |x, y| rgb_to_yuv(pixel(x, y))[0];
    // Chroma comes from the top-left pixel of each subsampled block, which
    // is enough for timing.
    let chroma = |x, y| {
        let [_, u, v] = rgb_to_yuv(pixel(x, y));
        [u, v]
    };

    let luma_plane = || (0..height).flat_map(|y| (0..width).map(move |x| luma(x, y))).collect::<Vec<u8>>();
    let chroma_420 = || (0..height / 2).flat_map(|y| (0..width / 2).map(move |x| chroma(2 * x, 2 * y)));
    match format {
        PixelFormat::Mjpeg => encode_mjpeg(still),
        PixelFormat::Yuyv => (0..height)
            .flat_map(|y| {
                (0..width / 2).flat_map(move |x| {
                    let [u, v] = chroma(2 * x, y);
                    [luma(2 * x, y), u, luma(2 * x + 1, y), v]
                })
            })
            .collect(),
        PixelFormat::Nv12 => {
            let mut data = luma_plane();
            data.extend(chroma_420().flatten());
            data
        }
        PixelFormat::Yu12 => {
            let mut data = luma_plane();
            data.extend(chroma_420().map(|[u, _]| u));
            data.extend(chroma_420().map(|[_, v]| v));
            data
        }
        PixelFormat::Rgb24 => still.as_raw().clone(),
        PixelFormat::Grey => luma_plane(),
    }
}

/// BT.601 limited-range Y, Cb, Cr of an RGB pixel.
fn rgb_to_yuv([red, green, blue]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (f32::from(red), f32::from(green), f32::from(blue));
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    [y, u, v].map(|value| value.round().clamp(0.0, 255.0) as u8)
}

/// Encodes `still` as a 4:2:2 JPEG without its DHT segment.
fn encode_mjpeg(still: &RgbImage) -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels: still.as_raw().as_slice(),
        width: still.width() as usize,
        pitch: 3 * still.width() as usize,
        height: still.height() as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    let jpeg = turbojpeg::compress(image, JPEG_QUALITY, turbojpeg::Subsamp::Sub2x1).expect("encoding the JPEG");
    strip_huffman_tables(&jpeg)
}

/// Removes the DHT segments before the first scan.
fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut stripped = jpeg[..2].to_vec();
    let mut position = 2;
    loop {
        let marker = jpeg[position + 1];
        let end = position + 2 + usize::from(u16::from_be_bytes([jpeg[position + 2], jpeg[position + 3]]));
        if marker == 0xDA {
            stripped.extend_from_slice(&jpeg[position..]);
            return stripped;
        }
        if marker != 0xC4 {
            stripped.extend_from_slice(&jpeg[position..end]);
        }
        position = end;
    }
}

// ---- the simple path ----------------------------------------------------------------

/// Converts a frame to RGB the plainest correct way.
fn simple_to_rgb(frame: &RawFrame<'_>) -> RgbImage {
    let (width, height) = (frame.width as usize, frame.height as usize);
    let data = frame.data;
    match frame.format {
        PixelFormat::Mjpeg => {
            let jpeg = insert_huffman_tables(data).expect("completing the MJPEG frame");
            image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).expect("decoding the JPEG").to_rgb8()
        }
        PixelFormat::Yuyv => RgbImage::from_fn(frame.width, frame.height, |x, y| {
            let pair = &data[y as usize * 2 * width + (x as usize / 2) * 4..][..4];
            image::Rgb(yuv_to_rgb(pair[(x as usize % 2) * 2], pair[1], pair[3]))
        }),
        PixelFormat::Nv12 => RgbImage::from_fn(frame.width, frame.height, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let chroma = &data[width * height + (y / 2) * width + (x / 2) * 2..][..2];
            image::Rgb(yuv_to_rgb(data[y * width + x], chroma[0], chroma[1]))
        }),
        PixelFormat::Yu12 => RgbImage::from_fn(frame.width, frame.height, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let chroma = (y / 2) * (width / 2) + x / 2;
            let u = data[width * height + chroma];
            let v = data[width * height + width * height / 4 + chroma];
            image::Rgb(yuv_to_rgb(data[y * width + x], u, v))
        }),
        PixelFormat::Rgb24 => RgbImage::from_raw(frame.width, frame.height, data.to_vec()).expect("a complete frame"),
        PixelFormat::Grey => {
            RgbImage::from_fn(frame.width, frame.height, |x, y| image::Rgb([data[y as usize * width + x as usize]; 3]))
        }
    }
}

/// BT.601 limited range to RGB in `f32`.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let luma = 1.164_383_6 * (f32::from(y) - 16.0);
    let (cb, cr) = (f32::from(u) - 128.0, f32::from(v) - 128.0);
    let red = luma + 1.596_026_8 * cr;
    let green = luma - 0.391_762_3 * cb - 0.812_967_6 * cr;
    let blue = luma + 2.017_232_1 * cb;
    [red, green, blue].map(|value| value.round().clamp(0.0, 255.0) as u8)
}
