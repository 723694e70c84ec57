//! Turns an image file or frame into the network's input tensor the way darknet does.
//!
//! Decoding (`load_image`, `decode_image`) accepts JPEG and PNG and yields
//! 8-bit RGB. `prepare_input` resizes that image into a planar RGB `f32`
//! tensor with values in 0..1, reproducing darknet's `resize_image` (stretch)
//! and `letterbox_image` (`letter_box=1`) with the same `f32` operations as
//! the C code, so the tests find no difference to a literal port.
//!
//! This module does not normalise by mean or standard deviation, because
//! darknet models expect plain 0..1 input, and it does not map boxes back to
//! the image: the decoder does that from the `InputPlacement`.

mod jpeg;
mod letterbox;
mod load;
mod resize;

pub use image::RgbImage;
pub use load::{decode_image, load_image};

/// How the image is fitted into the network input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResizeMode {
    /// Stretch to the network size, ignoring aspect ratio (darknet's default).
    #[default]
    Stretch,
    /// Keep the aspect ratio and pad with grey (cfg `letter_box=1`).
    Letterbox,
}

/// Where the image sits inside the network input, so boxes can be mapped back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputPlacement {
    pub image_width: u32,
    pub image_height: u32,
    pub net_width: u32,
    pub net_height: u32,
    pub mode: ResizeMode,
}

/// A rectangle of the network input, in network pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputRegion {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

impl InputRegion {
    /// Returns true when the region covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

impl InputPlacement {
    /// Computes the rectangle of the network input that the resized image covers.
    ///
    /// For `Stretch` this is the whole input. For `Letterbox` it is darknet's
    /// `letterbox_image` geometry, which `correct_yolo_boxes` repeats when it
    /// maps boxes back, so the decoder can use this region to do the same.
    /// The region is empty when the image has no pixels, and a letterbox
    /// region can be empty for extreme aspect ratios, as in darknet (for
    /// example 10000×1 into 416×416 gives a height of 416 / 10000 = 0).
    pub fn image_region(&self) -> InputRegion {
        match self.mode {
            ResizeMode::Stretch => {
                let has_pixels = self.image_width > 0 && self.image_height > 0;
                InputRegion {
                    left: 0,
                    top: 0,
                    width: if has_pixels { self.net_width } else { 0 },
                    height: if has_pixels { self.net_height } else { 0 },
                }
            }
            ResizeMode::Letterbox => {
                letterbox::region(self.image_width, self.image_height, self.net_width, self.net_height)
            }
        }
    }
}

/// The network input: planar RGB (channel, row, column), values 0..1.
#[derive(Clone, Debug)]
pub struct NetworkInput {
    pub data: Vec<f32>,
    pub placement: InputPlacement,
}

/// An image file or buffer that could not be turned into an RGB image.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("failed to read image file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not a JPEG or PNG image")]
    UnsupportedFormat { name: String },
    #[error("{name} is a truncated {format} image: the data ends before the end-of-image marker")]
    Truncated { name: String, format: &'static str },
    #[error("failed to decode {name} as a {format} image")]
    Decode {
        name: String,
        format: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("failed to decode {name} as a JPEG image")]
    DecodeJpeg {
        name: String,
        #[source]
        source: turbojpeg::Error,
    },
}

/// Value of network input pixels that the image does not cover: darknet's
/// letterbox grey, from `fill_image(boxed, .5)` in `letterbox_image`.
pub const PAD_VALUE: f32 = 0.5;

/// Resizes `image` into a `net_width`×`net_height` network input.
///
/// The result matches darknet's `resize_image` (for `Stretch`) or
/// `letterbox_image` (for `Letterbox`) applied to the image as darknet loads
/// it. Both keep darknet's corner-aligned bilinear sampling, including its
/// quirks, so a model receives the same input as under darknet.
///
/// Degenerate sizes do not panic: an image without pixels, or a letterbox
/// region of zero width or height, leaves the whole input at `PAD_VALUE`,
/// and a network side of 0 gives an empty input. A network height of 1
/// samples the first source row, where darknet's own code divides by zero
/// and its result is undefined.
pub fn prepare_input(image: &RgbImage, net_width: u32, net_height: u32, mode: ResizeMode) -> NetworkInput {
    let placement =
        InputPlacement { image_width: image.width(), image_height: image.height(), net_width, net_height, mode };

    let canvas_width = net_width as usize;
    let canvas_height = net_height as usize;
    let mut data = vec![PAD_VALUE; 3 * canvas_width * canvas_height];

    let region = placement.image_region();
    if !region.is_empty() {
        let mut canvas = resize::PlanarCanvas::new(&mut data, canvas_width, canvas_height);
        resize::resize_into(image, &mut canvas, region);
    }

    NetworkInput { data, placement }
}
