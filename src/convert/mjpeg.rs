//! Decodes MJPEG frames into RGB with libjpeg-turbo (the `turbojpeg` crate),
//! which uses SIMD (NEON on ARM, SSE2 or AVX2 on x86).
//!
//! The decoder reads the YCbCr of the JPEG as JFIF defines it (BT.601, full
//! range) and upsamples chroma with libjpeg-turbo's default "fancy"
//! (triangle) filter. Frames without Huffman tables are completed first.
//! This module does not check the frame against anything but its own
//! headers and the size the camera announced.

use super::{huffman, ConvertError, RawFrame, RgbImage};

/// A libjpeg-turbo decompressor and the buffer for completed frames, both
/// kept from frame to frame.
#[derive(Debug, Default)]
pub(super) struct MjpegDecoder {
    /// Created on the first frame, so converters that never see MJPEG do not
    /// allocate one.
    decompressor: Option<turbojpeg::Decompressor>,
    completed: Vec<u8>,
}

impl MjpegDecoder {
    /// Decodes `frame` into `image`, resizing `image` to the frame first.
    ///
    /// # Errors
    ///
    /// `MalformedMjpeg` for broken marker segments, `MjpegSizeMismatch` when
    /// the JPEG header disagrees with the frame's size, and `DecodeMjpeg`
    /// when libjpeg-turbo reports an error or a warning, which includes
    /// truncated and corrupt entropy-coded data.
    pub(super) fn decode_into(&mut self, frame: &RawFrame<'_>, image: &mut RgbImage) -> Result<(), ConvertError> {
        let MjpegDecoder { decompressor, completed } = self;
        let jpeg = huffman::complete_frame(frame.data, completed)?;

        let decode_error = |source| ConvertError::DecodeMjpeg { width: frame.width, height: frame.height, source };
        let decompressor = match decompressor {
            Some(decompressor) => decompressor,
            None => decompressor.insert(turbojpeg::Decompressor::new().map_err(decode_error)?),
        };

        let header = decompressor.read_header(jpeg).map_err(decode_error)?;
        let announced = (frame.width as usize, frame.height as usize);
        if (header.width, header.height) != announced {
            return Err(ConvertError::MjpegSizeMismatch {
                width: frame.width,
                height: frame.height,
                found_width: header.width,
                found_height: header.height,
            });
        }

        super::fit_image(image, frame.width, frame.height);

        // NOTE: libjpeg-turbo's warnings fail the decode too, because the
        // turbojpeg crate returns them as errors. That rejects truncated
        // frames, but also frames that libjpeg-turbo could decode past a
        // defect, such as extra bytes before a marker.
        let pixels: &mut [u8] = image;
        let output = turbojpeg::Image {
            pixels,
            width: header.width,
            pitch: 3 * header.width,
            height: header.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        decompressor.decompress(jpeg, output).map_err(decode_error)
    }
}
