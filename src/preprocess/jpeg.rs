//! Detects JPEG data that ends before its end-of-image marker.
//!
//! The JPEG decoder behind `image` 0.25 (zune-jpeg) fills the missing part of
//! a truncated file with grey and reports success, and a detector would then
//! run on half a picture. This walk over the marker segments finds where the
//! data stops. It does not validate anything else: corrupt segments are left
//! to the decoder.

/// Marker bytes (after `0xFF`) from ITU-T T.81, table B.1.
const START_OF_SCAN: u8 = 0xDA;
const END_OF_IMAGE: u8 = 0xD9;
const START_OF_IMAGE: u8 = 0xD8;
const TEMPORARY: u8 = 0x01;
const RESTART_FIRST: u8 = 0xD0;
const RESTART_LAST: u8 = 0xD7;

/// Returns true when `bytes`, a JPEG stream starting with the start-of-image
/// marker, runs out before its end-of-image marker.
///
/// Data after the end-of-image marker is ignored, since some cameras append
/// their own records there. A stream whose structure stops making sense
/// before its end returns false, so that the decoder reports that error.
pub(super) fn is_truncated(bytes: &[u8]) -> bool {
    let mut position = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        match bytes.get(position) {
            None => return true,
            Some(0xFF) => {}
            Some(_) => return false,
        }
        while bytes.get(position) == Some(&0xFF) {
            position += 1;
        }
        let Some(&marker) = bytes.get(position) else {
            return true;
        };
        position += 1;

        match marker {
            END_OF_IMAGE => return false,
            START_OF_IMAGE | TEMPORARY | RESTART_FIRST..=RESTART_LAST => continue,
            _ => {}
        }

        // Every other marker starts a segment whose big-endian length
        // includes the two length bytes.
        let Some(length_bytes) = bytes.get(position..position + 2) else {
            return true;
        };
        let length = usize::from(u16::from_be_bytes([length_bytes[0], length_bytes[1]]));
        if length < 2 {
            return false;
        }
        position += length;
        if position > bytes.len() {
            return true;
        }

        if marker == START_OF_SCAN {
            match end_of_entropy_coded_data(bytes, position) {
                Some(marker_position) => position = marker_position,
                None => return true,
            }
        }
    }
}

/// Finds the next marker after the entropy-coded data that starts at
/// `start`, skipping stuffed bytes (`0xFF 0x00`) and restart markers.
fn end_of_entropy_coded_data(bytes: &[u8], start: usize) -> Option<usize> {
    let mut position = start;
    loop {
        position += bytes.get(position..)?.iter().position(|&byte| byte == 0xFF)?;
        match *bytes.get(position + 1)? {
            0x00 | RESTART_FIRST..=RESTART_LAST => position += 2,
            _ => return Some(position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0 segment of 4 bytes, SOS with 2 bytes of header, then
    /// entropy-coded data with a stuffed byte and a restart marker, then EOI.
    const MINIMAL: [u8; 20] = [
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0,
        0xFF, 0xD9,
    ];

    #[test]
    fn complete_stream_is_not_truncated() {
        assert!(!is_truncated(&MINIMAL));
    }

    #[test]
    fn trailing_data_after_end_is_ignored() {
        let mut bytes = MINIMAL.to_vec();
        bytes.extend_from_slice(b"camera notes");
        assert!(!is_truncated(&bytes));
    }

    #[test]
    fn every_shorter_prefix_is_truncated() {
        for length in 2..MINIMAL.len() {
            assert!(is_truncated(&MINIMAL[..length]), "prefix of {length} bytes");
        }
    }

    #[test]
    fn malformed_structure_is_left_to_the_decoder() {
        assert!(!is_truncated(&[0xFF, 0xD8, 0x12, 0x34]));
        assert!(!is_truncated(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01]));
    }
}
