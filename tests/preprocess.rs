//! Checks image decoding, the network input against a literal port of
//! darknet's resize, letterbox geometry and drawing.

#[path = "preprocess/darknet_reference.rs"]
mod darknet_reference;

use std::path::{Path, PathBuf};

use edgedet::detection::{BoundingBox, Detection};
use edgedet::draw::draw_detections;
use edgedet::preprocess::{
    decode_image, load_image, prepare_input, InputRegion, PreprocessError, ResizeMode, RgbImage, PAD_VALUE,
};
use image::{GenericImageView, GrayImage, ImageFormat, Luma, Rgb, Rgba, RgbaImage};

/// Largest difference from darknet's values that a test accepts. The port
/// does the same `f32` operations in the same order, so the difference is
/// expected to be 0, but the requirement is agreement to well below one
/// step of an 8-bit input (1 / 255).
const TOLERANCE: f32 = 1e-5;

const PHOTOS: [&str; 4] = ["bus.jpg", "dog.jpg", "person.jpg", "zidane.jpg"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn load_photo(name: &str) -> RgbImage {
    match load_image(&fixture(name)) {
        Ok(image) => image,
        Err(error) => panic!("loading fixture {name}: {error:#?}"),
    }
}

/// Builds a deterministic image whose bytes cover 0..=255 with no visible pattern.
fn noise_image(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(width, height, |_, _| {
        let mut channel = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        };
        Rgb([channel(), channel(), channel()])
    })
}

/// Runs darknet's `load_image` + `resize_image` on `image`.
fn darknet_stretch(image: &RgbImage, net_width: u32, net_height: u32) -> Vec<f32> {
    let im = darknet_reference::load_image_from_rgb8(image);
    darknet_reference::resize_image(&im, net_width as i32, net_height as i32).data
}

/// Returns the largest absolute difference and the index where it occurs.
fn max_abs_difference(actual: &[f32], expected: &[f32]) -> (f32, usize) {
    assert_eq!(actual.len(), expected.len(), "tensor lengths differ");
    actual.iter().zip(expected).map(|(a, e)| (a - e).abs()).enumerate().fold(
        (0.0, 0),
        |(worst, at), (index, difference)| {
            // NaN must count as a failure, so it is never skipped by `>`.
            if difference > worst || difference.is_nan() {
                (difference, index)
            } else {
                (worst, at)
            }
        },
    )
}

fn assert_matches_darknet_stretch(image: &RgbImage, net_width: u32, net_height: u32, what: &str) {
    let input = prepare_input(image, net_width, net_height, ResizeMode::Stretch);
    assert_eq!(input.data.len(), (3 * net_width * net_height) as usize, "{what}: tensor length");

    let expected = darknet_stretch(image, net_width, net_height);
    let (difference, index) = max_abs_difference(&input.data, &expected);
    assert!(
        difference <= TOLERANCE,
        "{what} -> {net_width}x{net_height}: max difference {difference} at index {index} \
         (got {}, darknet {})",
        input.data[index],
        expected[index],
    );
}

// ---- stretch (darknet's resize_image) ----

#[test]
fn stretch_matches_darknet_on_photos() {
    for name in PHOTOS {
        let image = load_photo(name);
        for (net_width, net_height) in [(416, 416), (608, 608), (320, 256)] {
            assert_matches_darknet_stretch(&image, net_width, net_height, name);
        }
    }
}

#[test]
fn stretch_matches_darknet_on_odd_sizes() {
    let cases: [(u32, u32, u32, u32); 16] = [
        // (image width, image height, network width, network height)
        (1, 1, 416, 416),
        (1, 1, 1, 1),
        (1, 37, 416, 416),
        (37, 1, 416, 416),
        (1, 500, 32, 32),
        (2, 2, 416, 416),
        (5, 3, 7, 9),
        (100, 60, 416, 416),
        (416, 416, 416, 416),
        (416, 300, 416, 416),
        (300, 416, 416, 416),
        (640, 480, 1, 416),
        (640, 480, 2, 2),
        (1920, 1080, 416, 416),
        (417, 415, 416, 416),
        (3, 1000, 608, 320),
    ];
    for (seed, (width, height, net_width, net_height)) in (0u32..).zip(cases) {
        let image = noise_image(width, height, seed);
        assert_matches_darknet_stretch(&image, net_width, net_height, &format!("{width}x{height} noise"));
    }
}

#[test]
fn stretch_keeps_darknet_dark_last_row() {
    // For 720 rows into 544, (544 - 1) * (719 / 543) rounds to just below
    // 719 in f32, so darknet weights the last row by 1 - dy, about 6e-5.
    let image = RgbImage::from_pixel(64, 720, Rgb([200, 200, 200]));
    let input = prepare_input(&image, 32, 544, ResizeMode::Stretch);
    let last_row = &input.data[543 * 32..544 * 32];
    let row_above = &input.data[542 * 32..543 * 32];
    for (column, value) in last_row.iter().enumerate() {
        assert!(*value < 1e-3, "column {column} of the last row is {value}");
    }
    for (column, value) in row_above.iter().enumerate() {
        assert!((*value - 200.0 / 255.0).abs() < 1e-6, "column {column} of row 542 is {value}");
    }
    assert_matches_darknet_stretch(&image, 32, 544, "uniform 64x720");
}

#[test]
fn stretch_same_size_is_plain_conversion() {
    let image = noise_image(13, 7, 99);
    let input = prepare_input(&image, 13, 7, ResizeMode::Stretch);
    for (x, y, pixel) in image.enumerate_pixels() {
        for channel in 0..3 {
            let index = (channel * 7 + y as usize) * 13 + x as usize;
            let expected = (f64::from(pixel[channel]) / 255.0) as f32;
            assert_eq!(input.data[index], expected, "pixel ({x}, {y}) channel {channel}");
        }
    }
}

#[test]
fn stretch_to_one_row_samples_first_row() {
    // Darknet's result is undefined here (it divides by zero), so the
    // expected value is row 0 of darknet's resize of the first source row to
    // two rows, which is that row after the horizontal pass alone.
    let image = noise_image(50, 20, 7);
    let input = prepare_input(&image, 16, 1, ResizeMode::Stretch);
    let first_row = image.view(0, 0, 50, 1).to_image();
    let two_rows = darknet_stretch(&first_row, 16, 2);
    let expected: Vec<f32> = two_rows.chunks_exact(32).flat_map(|plane| plane[..16].to_vec()).collect();
    assert!(input.data.iter().all(|value| value.is_finite()), "NaN or infinity in output");
    let (difference, index) = max_abs_difference(&input.data, &expected);
    assert!(difference <= TOLERANCE, "max difference {difference} at index {index}");
}

#[test]
fn stretch_of_empty_image_is_all_padding() {
    let image = RgbImage::new(0, 0);
    let input = prepare_input(&image, 8, 8, ResizeMode::Stretch);
    assert_eq!(input.data.len(), 3 * 8 * 8);
    assert!(input.data.iter().all(|&value| value == PAD_VALUE));
}

#[test]
fn zero_network_size_gives_empty_input() {
    let image = noise_image(20, 10, 11);
    for mode in [ResizeMode::Stretch, ResizeMode::Letterbox] {
        for (net_width, net_height) in [(0, 0), (0, 416), (416, 0)] {
            let input = prepare_input(&image, net_width, net_height, mode);
            assert!(input.data.is_empty(), "{mode:?} {net_width}x{net_height}");
            assert!(input.placement.image_region().is_empty(), "{mode:?} {net_width}x{net_height}");
        }
    }
}

#[test]
fn values_are_planar_rgb_in_unit_range() {
    // A 2×1 image, red then blue, upscaled to 3×1: the middle column mixes them.
    let image = RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).expect("6 bytes for 2x1 RGB");
    let input = prepare_input(&image, 3, 2, ResizeMode::Stretch);
    let red = &input.data[0..6];
    let green = &input.data[6..12];
    let blue = &input.data[12..18];
    assert_eq!(red[0], 1.0);
    assert_eq!(red[1], 0.5);
    assert_eq!(red[2], 0.0);
    assert!(green.iter().all(|&value| value == 0.0));
    assert_eq!(blue[0], 0.0);
    assert_eq!(blue[1], 0.5);
    assert_eq!(blue[2], 1.0);
}

// ---- letterbox (darknet's letterbox_image) ----

#[test]
fn letterbox_matches_darknet() {
    let mut images: Vec<(String, RgbImage)> = PHOTOS.iter().map(|name| (name.to_string(), load_photo(name))).collect();
    images.push(("noise 1x1".into(), noise_image(1, 1, 1)));
    images.push(("noise 416x416".into(), noise_image(416, 416, 2)));
    images.push(("noise 416x234".into(), noise_image(416, 234, 3)));
    images.push(("noise 3x500".into(), noise_image(3, 500, 4)));

    for (what, image) in &images {
        for (net_width, net_height) in [(416, 416), (608, 352)] {
            let input = prepare_input(image, net_width, net_height, ResizeMode::Letterbox);
            let im = darknet_reference::load_image_from_rgb8(image);
            let (expected, new_width, new_height) =
                darknet_reference::letterbox_image(&im, net_width as i32, net_height as i32);

            let region = input.placement.image_region();
            assert_eq!(region.width as i32, new_width, "{what}: letterbox width");
            assert_eq!(region.height as i32, new_height, "{what}: letterbox height");
            assert_eq!(region.left as i32, (net_width as i32 - new_width) / 2, "{what}: letterbox left");
            assert_eq!(region.top as i32, (net_height as i32 - new_height) / 2, "{what}: letterbox top");

            let (difference, index) = max_abs_difference(&input.data, &expected.data);
            assert!(
                difference <= TOLERANCE,
                "{what} -> {net_width}x{net_height}: max difference {difference} at index {index}"
            );
        }
    }
}

#[test]
fn letterbox_geometry_of_photos() {
    let cases = [
        ("bus.jpg", InputRegion { left: 52, top: 0, width: 312, height: 416 }),
        ("zidane.jpg", InputRegion { left: 0, top: 91, width: 416, height: 234 }),
        ("dog.jpg", InputRegion { left: 0, top: 52, width: 416, height: 312 }),
        ("person.jpg", InputRegion { left: 0, top: 70, width: 416, height: 275 }),
    ];
    for (name, expected) in cases {
        let image = load_photo(name);
        let input = prepare_input(&image, 416, 416, ResizeMode::Letterbox);
        assert_eq!(input.placement.image_region(), expected, "{name}");
        assert_eq!(input.placement.image_width, image.width(), "{name}");
        assert_eq!(input.placement.image_height, image.height(), "{name}");
        assert_eq!(input.placement.net_width, 416, "{name}");
        assert_eq!(input.placement.mode, ResizeMode::Letterbox, "{name}");
    }
}

#[test]
fn letterbox_pads_with_half_and_embeds_stretch() {
    let (net_width, net_height) = (416usize, 416usize);
    for name in ["bus.jpg", "zidane.jpg"] {
        let image = load_photo(name);
        let input = prepare_input(&image, net_width as u32, net_height as u32, ResizeMode::Letterbox);
        let region = input.placement.image_region();
        let stretched = prepare_input(&image, region.width, region.height, ResizeMode::Stretch);

        let (left, top) = (region.left as usize, region.top as usize);
        let (width, height) = (region.width as usize, region.height as usize);
        for channel in 0..3 {
            for y in 0..net_height {
                for x in 0..net_width {
                    let value = input.data[(channel * net_height + y) * net_width + x];
                    let inside = (left..left + width).contains(&x) && (top..top + height).contains(&y);
                    if inside {
                        let expected = stretched.data[(channel * height + y - top) * width + x - left];
                        assert_eq!(value, expected, "{name}: channel {channel} at ({x}, {y}) inside the image");
                    } else {
                        assert_eq!(value, 0.5, "{name}: channel {channel} at ({x}, {y}) in the border");
                    }
                }
            }
        }
    }
}

#[test]
fn letterbox_of_extreme_aspect_ratio_is_all_padding() {
    // new_h = 1 * 416 / 1000 = 0 in darknet's integer arithmetic.
    let image = noise_image(1000, 1, 5);
    let input = prepare_input(&image, 416, 416, ResizeMode::Letterbox);
    assert!(input.placement.image_region().is_empty());
    assert!(input.data.iter().all(|&value| value == PAD_VALUE));
}

#[test]
fn stretch_region_is_whole_input() {
    let image = noise_image(30, 20, 6);
    let input = prepare_input(&image, 64, 32, ResizeMode::Stretch);
    assert_eq!(input.placement.image_region(), InputRegion { left: 0, top: 0, width: 64, height: 32 });
}

// ---- decoding ----

fn encode(image: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).expect("encoding a test image in memory");
    bytes.into_inner()
}

fn gradient_gray(width: u32, height: u32) -> GrayImage {
    GrayImage::from_fn(width, height, |x, y| Luma([((x * 7 + y * 13) % 256) as u8]))
}

/// Unwraps an error without printing a decoded image when there is none.
fn expect_error(result: Result<RgbImage, PreprocessError>) -> PreprocessError {
    match result {
        Ok(image) => panic!("expected an error, decoded a {}x{} image", image.width(), image.height()),
        Err(error) => error,
    }
}

#[test]
fn grayscale_png_loads_as_equal_channels() {
    let gray = gradient_gray(40, 30);
    let directory = tempfile::tempdir().expect("creating a temporary directory");
    let path = directory.path().join("gray.png");
    gray.save(&path).expect("writing gray.png");

    let rgb = load_image(&path).expect("loading gray.png");
    assert_eq!(rgb.dimensions(), (40, 30));
    for (x, y, pixel) in rgb.enumerate_pixels() {
        let expected = gray.get_pixel(x, y)[0];
        assert_eq!(pixel.0, [expected; 3], "pixel ({x}, {y})");
    }
}

#[test]
fn grayscale_jpeg_loads_as_equal_channels() {
    let gray = gradient_gray(64, 48);
    let directory = tempfile::tempdir().expect("creating a temporary directory");
    let path = directory.path().join("gray.jpg");
    gray.save(&path).expect("writing gray.jpg");

    let rgb = load_image(&path).expect("loading gray.jpg");
    assert_eq!(rgb.dimensions(), (64, 48));
    for (x, y, pixel) in rgb.enumerate_pixels() {
        assert_eq!(pixel[0], pixel[1], "pixel ({x}, {y}): red and green");
        assert_eq!(pixel[1], pixel[2], "pixel ({x}, {y}): green and blue");
    }
}

#[test]
fn png_round_trip_is_exact() {
    let original = noise_image(33, 17, 8);
    let bytes = encode(&original.clone().into(), ImageFormat::Png);
    let decoded = decode_image(&bytes, "noise.png").expect("decoding noise.png");
    assert_eq!(decoded.dimensions(), original.dimensions());
    assert_eq!(decoded.as_raw(), original.as_raw());
}

#[test]
fn png_alpha_is_dropped_without_blending() {
    let rgba = RgbaImage::from_fn(20, 10, |x, y| Rgba([(x * 12) as u8, (y * 25) as u8, 200, (x * y) as u8]));
    let bytes = encode(&rgba.clone().into(), ImageFormat::Png);
    let rgb = decode_image(&bytes, "alpha.png").expect("decoding alpha.png");
    for (x, y, pixel) in rgb.enumerate_pixels() {
        let source = rgba.get_pixel(x, y);
        assert_eq!(pixel.0, [source[0], source[1], source[2]], "pixel ({x}, {y})");
    }
}

#[test]
fn png_16_bit_keeps_high_byte() {
    // stb_image keeps the high byte; rounding would turn 0x12ff into 0x13.
    let wide = image::ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(4, 2, |x, y| {
        Rgb([0x12ff, (x as u16) << 12 | 0x0fff, (y as u16) << 8 | 0x80])
    });
    let bytes = encode(&image::DynamicImage::ImageRgb16(wide.clone()), ImageFormat::Png);
    let rgb = decode_image(&bytes, "wide.png").expect("decoding wide.png");
    for (x, y, pixel) in rgb.enumerate_pixels() {
        let source = wide.get_pixel(x, y);
        let expected = source.0.map(|value| (value >> 8) as u8);
        assert_eq!(pixel.0, expected, "pixel ({x}, {y})");
    }
}

#[test]
fn photo_decodes_at_fixture_size() {
    let bus = load_photo("bus.jpg");
    assert_eq!(bus.dimensions(), (810, 1080));
}

#[test]
fn non_image_file_is_rejected_with_its_name() {
    let directory = tempfile::tempdir().expect("creating a temporary directory");
    let path = directory.path().join("notes.jpg");
    std::fs::write(&path, "this is text, not an image\n").expect("writing notes.jpg");

    let error = expect_error(load_image(&path));
    assert!(matches!(error, PreprocessError::UnsupportedFormat { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("is not a JPEG or PNG image"), "{message}");
}

#[test]
fn empty_file_is_rejected() {
    let error = expect_error(decode_image(&[], "empty.png"));
    assert!(error.to_string().contains("empty.png"), "{error}");
}

#[test]
fn other_image_format_is_rejected() {
    // The start of a GIF file: the signature is enough to recognise it.
    let gif = b"GIF89a\x04\x00\x04\x00\x00\x00\x00;";
    let error = expect_error(decode_image(gif, "frame.gif"));
    assert!(matches!(error, PreprocessError::UnsupportedFormat { .. }), "{error:?}");
}

#[test]
fn truncated_jpeg_is_rejected_with_its_name() {
    let bytes = std::fs::read(fixture("bus.jpg")).expect("reading bus.jpg");
    let directory = tempfile::tempdir().expect("creating a temporary directory");
    let path = directory.path().join("truncated.jpg");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("writing truncated.jpg");

    let error = expect_error(load_image(&path));
    assert!(matches!(error, PreprocessError::Truncated { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("JPEG"), "{message}");
}

#[test]
fn jpeg_cut_anywhere_is_rejected() {
    for name in PHOTOS {
        let bytes = std::fs::read(fixture(name)).expect("reading a fixture photo");
        // Cuts inside the headers (EXIF), the entropy-coded data, and just
        // before the final marker byte.
        for length in [20, 300, bytes.len() / 10, bytes.len() * 9 / 10, bytes.len() - 1] {
            let result = decode_image(&bytes[..length], name);
            assert!(result.is_err(), "{name} cut to {length} of {} bytes decoded", bytes.len());
        }
    }
}

#[test]
fn truncated_png_is_rejected_with_its_name() {
    let bytes = encode(&noise_image(64, 64, 10).into(), ImageFormat::Png);
    let error = expect_error(decode_image(&bytes[..bytes.len() / 2], "half.png"));
    assert!(matches!(error, PreprocessError::Decode { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("half.png"), "{message}");
    assert!(message.contains("PNG"), "{message}");
}

#[test]
fn missing_file_error_names_path() {
    let directory = tempfile::tempdir().expect("creating a temporary directory");
    let path = directory.path().join("absent.jpg");
    let error = expect_error(load_image(&path));
    assert!(matches!(error, PreprocessError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
}

// ---- drawing ----

fn detection(x: f32, y: f32, w: f32, h: f32, class_id: usize) -> Detection {
    Detection { label: "person".into(), class_id, score: 0.87, bbox: BoundingBox { x, y, w, h } }
}

const GREY: Rgb<u8> = Rgb([128, 128, 128]);

#[test]
fn draw_box_inside_image_outlines_it() {
    let mut image = RgbImage::from_pixel(200, 200, GREY);
    draw_detections(&mut image, &[detection(50.0, 60.0, 80.0, 100.0, 0)]);

    // Left, right and bottom edges (the label sits above the top edge).
    assert_ne!(*image.get_pixel(50, 120), GREY, "left edge");
    assert_ne!(*image.get_pixel(130, 120), GREY, "right edge");
    assert_ne!(*image.get_pixel(90, 160), GREY, "bottom edge");
    // The box's inside and the area well outside stay untouched.
    assert_eq!(*image.get_pixel(90, 120), GREY, "inside");
    assert_eq!(*image.get_pixel(10, 190), GREY, "outside");
    // The label background is drawn just above the top edge.
    assert_ne!(*image.get_pixel(51, 55), GREY, "label");
}

#[test]
fn draw_box_partly_outside_is_clipped_to_edges() {
    let mut image = RgbImage::from_pixel(200, 150, GREY);
    let detections = [
        detection(-40.0, 50.0, 100.0, 60.0, 1),
        detection(150.0, 100.0, 500.0, 500.0, 2),
        detection(-10.0, -10.0, 300.0, 300.0, 3),
    ];
    draw_detections(&mut image, &detections);

    // First box: x from -40 to 60, drawn from the image's left edge.
    assert_ne!(*image.get_pixel(0, 80), GREY, "first box clipped left edge");
    assert_ne!(*image.get_pixel(60, 80), GREY, "first box right edge");
    assert_eq!(*image.get_pixel(30, 80), GREY, "first box inside");
    // Second box runs off the right and bottom: its edges land on the border.
    assert_ne!(*image.get_pixel(150, 130), GREY, "second box left edge");
    assert_ne!(*image.get_pixel(199, 130), GREY, "second box clipped right edge");
    assert_ne!(*image.get_pixel(175, 149), GREY, "second box clipped bottom edge");
    // Third box covers everything: its outline follows the image border.
    assert_ne!(*image.get_pixel(100, 149), GREY, "third box bottom border");
    assert_eq!(*image.get_pixel(100, 75), GREY, "centre of the image");
}

#[test]
fn draw_skips_boxes_outside_or_invalid() {
    let mut image = RgbImage::from_pixel(100, 100, GREY);
    let detections = [
        detection(150.0, 150.0, 20.0, 20.0, 0),
        detection(-50.0, 10.0, 20.0, 20.0, 0),
        detection(f32::NAN, 10.0, 20.0, 20.0, 0),
        detection(10.0, 10.0, f32::INFINITY, 20.0, 0),
        detection(10.0, 10.0, -30.0, 20.0, 0),
    ];
    draw_detections(&mut image, &detections);
    assert!(image.pixels().all(|pixel| *pixel == GREY), "an invalid or outside box changed pixels");
}

#[test]
fn draw_survives_degenerate_inputs() {
    let mut empty = RgbImage::new(0, 0);
    draw_detections(&mut empty, &[detection(0.0, 0.0, 10.0, 10.0, 0)]);

    let mut tiny = RgbImage::from_pixel(1, 1, GREY);
    draw_detections(&mut tiny, &[detection(0.0, 0.0, 0.0, 0.0, 0), detection(-1e30, -1e30, 3e30, 3e30, 7)]);
    assert_ne!(*tiny.get_pixel(0, 0), GREY, "a box covering the single pixel");

    let mut image = RgbImage::from_pixel(64, 64, GREY);
    let mut long_label = detection(60.0, 60.0, 10.0, 10.0, usize::MAX);
    long_label.label = "ü ∑ 字".repeat(100);
    long_label.score = f32::NAN;
    draw_detections(&mut image, &[long_label]);
    assert_ne!(*image.get_pixel(63, 63), GREY, "box in the corner");
}

#[test]
fn draw_label_text_contrasts_with_background() {
    let mut image = RgbImage::from_pixel(300, 300, GREY);
    draw_detections(&mut image, &[detection(100.0, 100.0, 100.0, 100.0, 0)]);

    // The label band above the box contains exactly two colours: background and text.
    let mut colours: Vec<Rgb<u8>> = Vec::new();
    for y in 90..100 {
        for x in 101..150 {
            let pixel = *image.get_pixel(x, y);
            if !colours.contains(&pixel) {
                colours.push(pixel);
            }
        }
    }
    assert_eq!(colours.len(), 2, "label colours: {colours:?}");
}
