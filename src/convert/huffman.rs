//! Completes MJPEG frames that leave out their Huffman tables.
//!
//! Many USB webcams send baseline JPEG frames without a DHT segment and
//! expect the decoder to use the example tables of ITU-T T.81 Annex K.3
//! (Motion JPEG as in AVI files works this way). This module finds the
//! frame's first scan and inserts one DHT segment with those four tables
//! before it. It walks only the marker segments up to that scan: it does not
//! check the entropy-coded data, which the decoder does, and it leaves frames
//! that already have tables, or that are not baseline, unchanged.
//!
//! The insertion is written by hand because the Rust JPEG decoders only
//! fill these tables in while they decode (zune-jpeg 0.5 and jpeg-decoder
//! 0.3, and only for frames with an `AVI1` APP0 segment), and none writes
//! them into the frame. libjpeg-turbo 3.1, which `turbojpeg-sys` 1.2 builds,
//! falls back to the same tables by itself (`jinit_huff_decoder` in
//! `jdhuff.c`). After the insertion a frame is a complete JPEG file that any
//! decoder reads, whether it is decoded here, stored as a snapshot or passed
//! on.

use std::borrow::Cow;

use super::ConvertError;

/// Marker bytes (after `0xFF`) from ITU-T T.81, table B.1.
const START_OF_IMAGE: u8 = 0xD8;
const END_OF_IMAGE: u8 = 0xD9;
const START_OF_SCAN: u8 = 0xDA;
const DEFINE_HUFFMAN_TABLES: u8 = 0xC4;
const BASELINE_FRAME: u8 = 0xC0;
const TEMPORARY: u8 = 0x01;
const RESTART_FIRST: u8 = 0xD0;
const RESTART_LAST: u8 = 0xD7;

/// One Huffman table of T.81 Annex K.3: the number of codes of each length
/// from 1 to 16 bits, then the symbols in code order.
struct HuffmanTable {
    /// Table class (0 for DC, 1 for AC) in the high nibble, destination
    /// (0 for luminance, 1 for chrominance) in the low nibble, as in a DHT
    /// segment.
    class_and_destination: u8,
    code_counts: [u8; 16],
    symbols: &'static [u8],
}

/// Table K.3, luminance DC differences.
const DC_LUMINANCE: HuffmanTable = HuffmanTable {
    class_and_destination: 0x00,
    code_counts: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Table K.4, chrominance DC differences.
const DC_CHROMINANCE: HuffmanTable = HuffmanTable {
    class_and_destination: 0x01,
    code_counts: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Table K.5, luminance AC coefficients.
const AC_LUMINANCE: HuffmanTable = HuffmanTable {
    class_and_destination: 0x10,
    code_counts: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D],
    symbols: &[
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
        0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72,
        0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37,
        0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3,
        0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
        0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
        0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ],
};

/// Table K.6, chrominance AC coefficients.
const AC_CHROMINANCE: HuffmanTable = HuffmanTable {
    class_and_destination: 0x11,
    code_counts: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
    symbols: &[
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
        0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1,
        0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36,
        0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
        0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A,
        0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
        0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
        0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ],
};

/// The tables in the order of the DHT segment. It is the order ffmpeg's MJPEG
/// encoder writes them in, which lets the tests compare whole segments.
const STANDARD_TABLES: [&HuffmanTable; 4] = [&DC_LUMINANCE, &DC_CHROMINANCE, &AC_LUMINANCE, &AC_CHROMINANCE];

/// Bytes of the DHT segment with all four tables: marker, length, and per
/// table one class byte, 16 counts and 12 or 162 symbols.
const SEGMENT_LEN: usize = 2 + 2 + 4 * (1 + 16) + 12 + 12 + 162 + 162;

/// The complete DHT segment, marker included.
const STANDARD_DHT_SEGMENT: [u8; SEGMENT_LEN] = build_segment();

const fn build_segment() -> [u8; SEGMENT_LEN] {
    let mut segment = [0u8; SEGMENT_LEN];
    segment[0] = 0xFF;
    segment[1] = DEFINE_HUFFMAN_TABLES;
    // The length counts itself but not the marker.
    let length = (SEGMENT_LEN - 2) as u16;
    segment[2] = (length >> 8) as u8;
    segment[3] = length as u8;

    let mut position = 4;
    let mut table_index = 0;
    while table_index < STANDARD_TABLES.len() {
        let table = STANDARD_TABLES[table_index];
        segment[position] = table.class_and_destination;
        position += 1;

        let mut length_index = 0;
        while length_index < 16 {
            segment[position] = table.code_counts[length_index];
            position += 1;
            length_index += 1;
        }

        let mut symbol_index = 0;
        while symbol_index < table.symbols.len() {
            segment[position] = table.symbols[symbol_index];
            position += 1;
            symbol_index += 1;
        }
        table_index += 1;
    }
    segment
}

/// Facts from the marker segments before a frame's first scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Headers {
    /// Byte offset of the `0xFF` that starts the first start-of-scan marker.
    first_scan: usize,
    has_huffman_tables: bool,
    /// The start-of-frame marker byte, such as `0xC0` for baseline.
    frame_marker: u8,
}

/// Returns `jpeg` with the standard Huffman tables inserted before its first
/// scan when it is a baseline JPEG without a DHT segment, and borrowed
/// unchanged otherwise.
///
/// # Errors
///
/// `MalformedMjpeg` when the data does not start with a start-of-image
/// marker, ends inside or between the segments before the first scan, or
/// has no frame header or no scan.
pub fn insert_huffman_tables(jpeg: &[u8]) -> Result<Cow<'_, [u8]>, ConvertError> {
    let headers = read_headers(jpeg)?;
    if !needs_standard_tables(&headers) {
        return Ok(Cow::Borrowed(jpeg));
    }
    let mut completed = Vec::with_capacity(jpeg.len() + SEGMENT_LEN);
    splice_tables(jpeg, headers.first_scan, &mut completed);
    Ok(Cow::Owned(completed))
}

/// Writes `jpeg` with the standard Huffman tables into `scratch` and returns
/// `scratch`'s content when the frame needs them. Otherwise returns `jpeg`
/// itself. `scratch` keeps its allocation from frame to frame.
///
/// # Errors
///
/// As for [`insert_huffman_tables`].
pub(super) fn complete_frame<'a>(jpeg: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<&'a [u8], ConvertError> {
    let headers = read_headers(jpeg)?;
    if !needs_standard_tables(&headers) {
        return Ok(jpeg);
    }
    scratch.clear();
    splice_tables(jpeg, headers.first_scan, scratch);
    Ok(scratch)
}

/// Returns true for a baseline frame without tables. The K.3 tables fit only
/// 8-bit sequential Huffman coding, so other frames are left to the decoder.
fn needs_standard_tables(headers: &Headers) -> bool {
    !headers.has_huffman_tables && headers.frame_marker == BASELINE_FRAME
}

fn splice_tables(jpeg: &[u8], first_scan: usize, output: &mut Vec<u8>) {
    output.extend_from_slice(&jpeg[..first_scan]);
    output.extend_from_slice(&STANDARD_DHT_SEGMENT);
    output.extend_from_slice(&jpeg[first_scan..]);
}

/// Walks the marker segments from the start-of-image marker to the first
/// start-of-scan marker.
fn read_headers(jpeg: &[u8]) -> Result<Headers, ConvertError> {
    let malformed = |reason: String| ConvertError::MalformedMjpeg { reason };

    if jpeg.get(..2) != Some(&[0xFF, START_OF_IMAGE]) {
        return Err(malformed("it does not start with a JPEG start-of-image marker (FF D8)".to_string()));
    }

    let mut position = 2;
    let mut has_huffman_tables = false;
    let mut frame_marker = None;
    loop {
        let marker_start = position;
        match jpeg.get(position) {
            None => return Err(malformed(format!("it ends after {} bytes, before its first scan", jpeg.len()))),
            Some(0xFF) => {}
            Some(byte) => {
                return Err(malformed(format!("expected a marker at byte {position}, found 0x{byte:02X}")));
            }
        }
        // T.81 B.1.1.2 allows any number of 0xFF fill bytes before a marker.
        while jpeg.get(position) == Some(&0xFF) {
            position += 1;
        }
        let Some(&marker) = jpeg.get(position) else {
            return Err(malformed(format!("it ends after {} bytes, before its first scan", jpeg.len())));
        };
        position += 1;

        match marker {
            TEMPORARY | RESTART_FIRST..=RESTART_LAST => continue,
            START_OF_IMAGE | END_OF_IMAGE => {
                return Err(malformed(format!("marker 0x{marker:02X} at byte {marker_start} comes before any scan")));
            }
            _ => {}
        }

        // Every other marker starts a segment whose big-endian length
        // counts the two length bytes but not the marker.
        let Some(length_bytes) = jpeg.get(position..position + 2) else {
            return Err(malformed(format!(
                "it ends after {} bytes, inside segment 0x{marker:02X} at byte {marker_start}",
                jpeg.len()
            )));
        };
        let length = usize::from(u16::from_be_bytes([length_bytes[0], length_bytes[1]]));
        if length < 2 {
            return Err(malformed(format!(
                "segment 0x{marker:02X} at byte {marker_start} has an invalid length of {length}, less than 2"
            )));
        }
        if position + length > jpeg.len() {
            return Err(malformed(format!(
                "it ends after {} bytes, inside segment 0x{marker:02X} at byte {marker_start}, which needs {length} bytes",
                jpeg.len()
            )));
        }

        match marker {
            START_OF_SCAN => {
                let Some(frame_marker) = frame_marker else {
                    return Err(malformed(format!(
                        "its first scan at byte {marker_start} has no frame header (SOF) before it"
                    )));
                };
                return Ok(Headers { first_scan: marker_start, has_huffman_tables, frame_marker });
            }
            DEFINE_HUFFMAN_TABLES => has_huffman_tables = true,
            // T.81 table B.1 gives C0 to CF to the SOF markers, except C4
            // (DHT), C8 (JPG) and CC (DAC).
            0xC0..=0xCF if marker != 0xC8 && marker != 0xCC => frame_marker = Some(marker),
            _ => {}
        }
        position += length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, a 4-byte APP0, a baseline SOF with one component, SOS, one byte
    /// of entropy-coded data, EOI. Enough structure for the header walk.
    const WITHOUT_TABLES: [u8; 35] = [
        0xFF, 0xD8, // SOI
        0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, // APP0
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00, // SOF0
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, // SOS
        0x12, // data
        0xFF, 0xD9, // EOI
        0x00, // a byte after EOI, which the walk must ignore
    ];
    const SCAN_OFFSET: usize = 21;

    #[test]
    fn standard_tables_have_as_many_symbols_as_codes() {
        for table in STANDARD_TABLES {
            let codes: usize = table.code_counts.iter().map(|&count| usize::from(count)).sum();
            assert_eq!(codes, table.symbols.len(), "table 0x{:02X}", table.class_and_destination);
        }
    }

    #[test]
    fn segment_length_field_matches_segment() {
        // After the marker: 2 length bytes, 4 × 17 class and count bytes and
        // 12 + 12 + 162 + 162 symbols, 418 bytes in all.
        assert_eq!(&STANDARD_DHT_SEGMENT[..4], &[0xFF, 0xC4, 0x01, 0xA2]);
        assert_eq!(STANDARD_DHT_SEGMENT.len(), 420);
    }

    #[test]
    fn segment_lists_tables_in_order() {
        assert_eq!(STANDARD_DHT_SEGMENT[4], 0x00);
        assert_eq!(STANDARD_DHT_SEGMENT[4 + 17 + 12], 0x01);
        assert_eq!(STANDARD_DHT_SEGMENT[4 + 2 * (17 + 12)], 0x10);
        assert_eq!(STANDARD_DHT_SEGMENT[4 + 2 * (17 + 12) + 17 + 162], 0x11);
        assert_eq!(STANDARD_DHT_SEGMENT[SEGMENT_LEN - 1], 0xFA);
    }

    #[test]
    fn tables_go_before_first_scan() {
        let completed = insert_huffman_tables(&WITHOUT_TABLES).unwrap();
        assert_eq!(completed.len(), WITHOUT_TABLES.len() + SEGMENT_LEN);
        assert_eq!(&completed[..SCAN_OFFSET], &WITHOUT_TABLES[..SCAN_OFFSET]);
        assert_eq!(&completed[SCAN_OFFSET..SCAN_OFFSET + SEGMENT_LEN], &STANDARD_DHT_SEGMENT);
        assert_eq!(&completed[SCAN_OFFSET + SEGMENT_LEN..], &WITHOUT_TABLES[SCAN_OFFSET..]);
    }

    #[test]
    fn completed_frame_is_left_unchanged() {
        let completed = insert_huffman_tables(&WITHOUT_TABLES).unwrap().into_owned();
        let again = insert_huffman_tables(&completed).unwrap();
        assert!(matches!(again, Cow::Borrowed(_)));
    }

    #[test]
    fn progressive_frame_is_left_unchanged() {
        let mut progressive = WITHOUT_TABLES;
        progressive[9] = 0xC2;
        assert!(matches!(insert_huffman_tables(&progressive).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn fill_bytes_stay_before_scan_marker() {
        let mut padded = WITHOUT_TABLES[..SCAN_OFFSET].to_vec();
        padded.extend_from_slice(&[0xFF, 0xFF]);
        padded.extend_from_slice(&WITHOUT_TABLES[SCAN_OFFSET..]);
        let mut scratch = Vec::new();
        let completed = complete_frame(&padded, &mut scratch).unwrap();
        assert_eq!(&completed[SCAN_OFFSET..SCAN_OFFSET + SEGMENT_LEN], &STANDARD_DHT_SEGMENT);
        assert_eq!(&completed[SCAN_OFFSET + SEGMENT_LEN..SCAN_OFFSET + SEGMENT_LEN + 4], &[0xFF, 0xFF, 0xFF, 0xDA]);
    }

    #[test]
    fn every_prefix_ending_before_scan_is_an_error() {
        for length in 0..SCAN_OFFSET + 10 {
            let error = insert_huffman_tables(&WITHOUT_TABLES[..length]).unwrap_err();
            assert!(matches!(error, ConvertError::MalformedMjpeg { .. }), "prefix of {length} bytes: {error}");
        }
    }

    #[test]
    fn errors_say_where_the_structure_breaks() {
        let message = |bytes: &[u8]| insert_huffman_tables(bytes).unwrap_err().to_string();
        assert_eq!(
            message(b"\x89PNG"),
            "malformed MJPEG frame: it does not start with a JPEG start-of-image marker (FF D8)"
        );
        assert_eq!(
            message(&WITHOUT_TABLES[..4]),
            "malformed MJPEG frame: it ends after 4 bytes, inside segment 0xE0 at byte 2"
        );
        assert_eq!(
            message(&WITHOUT_TABLES[..12]),
            "malformed MJPEG frame: it ends after 12 bytes, inside segment 0xC0 at byte 8, which needs 11 bytes"
        );
        assert_eq!(message(&[0xFF, 0xD8, 0x00]), "malformed MJPEG frame: expected a marker at byte 2, found 0x00");
        assert_eq!(
            message(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01]),
            "malformed MJPEG frame: segment 0xE0 at byte 2 has an invalid length of 1, less than 2"
        );
        assert_eq!(
            message(&[0xFF, 0xD8, 0xFF, 0xD9]),
            "malformed MJPEG frame: marker 0xD9 at byte 2 comes before any scan"
        );
    }

    #[test]
    fn scan_without_frame_header_is_an_error() {
        let mut without_frame = WITHOUT_TABLES[..8].to_vec();
        without_frame.extend_from_slice(&WITHOUT_TABLES[SCAN_OFFSET..]);
        assert_eq!(
            insert_huffman_tables(&without_frame).unwrap_err().to_string(),
            "malformed MJPEG frame: its first scan at byte 8 has no frame header (SOF) before it"
        );
    }
}
