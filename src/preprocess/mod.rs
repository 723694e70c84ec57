//! Turns a decoded image into the network's input tensor the way darknet does.
// Skeleton: the preprocessing owner replaces these bodies.

use std::path::Path;

pub use image::RgbImage;

/// How the image is fitted into the network input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// Stretch to the network size, ignoring aspect ratio (darknet's default).
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

/// The network input: planar RGB (channel, row, column), values 0..1.
#[derive(Clone, Debug)]
pub struct NetworkInput {
    pub data: Vec<f32>,
    pub placement: InputPlacement,
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("reading image {path}")]
    Read { path: String, #[source] source: std::io::Error },
    #[error("{name} is not a JPEG or PNG image that can be decoded")]
    Decode { name: String, #[source] source: image::ImageError },
}

/// Reads and decodes a JPEG or PNG file (colour or grayscale) into RGB.
pub fn load_image(path: &Path) -> Result<RgbImage, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Read { path: path.display().to_string(), source })?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes JPEG or PNG bytes into RGB; `name` appears in errors.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage, PreprocessError> {
    image::load_from_memory(bytes)
        .map(|img| img.to_rgb8())
        .map_err(|source| PreprocessError::Decode { name: name.to_string(), source })
}

/// Resizes `image` into a `net_width`×`net_height` network input.
pub fn prepare_input(image: &RgbImage, net_width: u32, net_height: u32, mode: ResizeMode) -> NetworkInput {
    let _ = (image, net_width, net_height, mode);
    unimplemented!("owned by the preprocessing step")
}
