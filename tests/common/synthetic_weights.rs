//! Synthetic darknet `.weights` files for checking whole architectures when
//! no trained weights are at hand.
//!
//! The values are deterministic and sized so that activations stay of order 1
//! through networks of 100+ layers. Each convolution's weights are uniform
//! with variance `gain / fan_in`, and batch norm multiplies by about 1 and
//! shifts by about 0. The last convolution of every residual branch (the one
//! just before a `[shortcut]`) gets a small gain, so that summing 20+ residual
//! blocks does not blow the signal up. Head convolutions (just before a
//! `[yolo]`) get biases wide enough to spread objectness and class scores over
//! cells. Their box-size filters (tw, th) get a small gain, because box sizes
//! grow as `exp(tw)` and an absolute tolerance on them would otherwise compare
//! numbers in the tens or hundreds.
//!
//! Rolling variances are about 100 (with scales about 10) rather than about 1,
//! so that the batch-norm epsilon hardly matters. Darknet's `detector test`
//! folds batch norm with epsilon 1e-5 (`fuse_conv_batchnorm`), while OpenCV's
//! darknet importer uses 1e-6 (`setBatchNorm` in `darknet_io.cpp`). With
//! variances near 1, that difference alone moved the head outputs of
//! yolov4-tiny-3l (24 convolutions) by up to 4e-4, measured against a float64
//! evaluation of the network. The effect scales with 1 / variance, so near 100
//! it is about as small as f32 rounding.
//!
//! The file format is darknet's: int32 major, minor and revision, then `seen`
//! as uint64 when `major * 10 + minor >= 2` (uint32 otherwise), then for each
//! `[convolutional]` in cfg order its biases, the batch-norm scales, rolling
//! means and rolling variances when it has batch norm, and its weights, all
//! little-endian f32.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use edgedet::model::darknet::ConvParamsLayout;

/// Variance gain of an ordinary convolution, as He initialisation uses for
/// ReLU-like activations such as leaky.
const GAIN_DEFAULT: f32 = 2.0;
/// Variance gain of a convolution with mish activation. Near 0 mish has slope
/// 0.6 and keeps only 0.36 of the variance, against about 0.5 for a ReLU. So
/// He's gain of 2 lets the signal fade over the 100+ mish layers of
/// yolov4x-mish, and 2.4 lets it grow. With 2.15 the heads of yolov4,
/// yolov4-csp and yolov4x-mish stay of order 1 at the sizes the OpenCV tests use.
const GAIN_MISH: f32 = 2.15;
/// Variance gain of the last convolution of a residual branch.
const GAIN_RESIDUAL_BRANCH: f32 = 0.1;
/// Variance gain of a convolution that feeds a `[yolo]` layer, for its x, y,
/// objectness and class entries.
const GAIN_HEAD: f32 = 2.0;
/// Variance gain of the head filters that give tw and th (entries 2 and 3 of each anchor).
const GAIN_HEAD_BOX_SIZE: f32 = 0.1;
/// Half-width of the uniform range of head biases, in logits.
const HEAD_BIAS_RANGE: f32 = 0.5;
/// Half-width of the uniform range of the other convolutions' biases.
const BIAS_RANGE: f32 = 0.1;

/// Darknet weights-file version written in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderVersion {
    /// Version 0.2.5: `seen` is a uint64, as darknet writes today.
    Seen64,
    /// Version 0.1.0: `seen` is a uint32, as in files from older darknet.
    Seen32,
}

/// SplitMix64, a small deterministic generator. Its quality is ample for test weights.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        // The top 24 bits give every f32 step in [0, 1).
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }
}

/// Role of a `[convolutional]` section, from the section that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRole {
    /// Followed by any other section, with leaky or another ReLU-like activation.
    Plain,
    /// Like `Plain`, with mish activation.
    PlainMish,
    /// Followed by `[shortcut]`: the last convolution of a residual branch.
    ResidualBranch,
    /// Followed by `[yolo]`: produces a head's raw output, `entries_per_anchor`
    /// (5 + classes) filters per anchor.
    Head { entries_per_anchor: usize },
}

impl ConvRole {
    /// Variance gain and bias half-width of output filter `filter`.
    fn filter_init(self, filter: usize) -> (f32, f32) {
        match self {
            ConvRole::Plain => (GAIN_DEFAULT, BIAS_RANGE),
            ConvRole::PlainMish => (GAIN_MISH, BIAS_RANGE),
            ConvRole::ResidualBranch => (GAIN_RESIDUAL_BRANCH, BIAS_RANGE),
            ConvRole::Head { entries_per_anchor } if matches!(filter % entries_per_anchor, 2 | 3) => {
                (GAIN_HEAD_BOX_SIZE, HEAD_BIAS_RANGE)
            }
            ConvRole::Head { .. } => (GAIN_HEAD, HEAD_BIAS_RANGE),
        }
    }
}

/// Lists the role of every `[convolutional]` section of a darknet cfg, in cfg order.
///
/// This reads section headers, `activation` and the `classes` of `[yolo]`
/// sections with its own minimal scan, independently of edgedet's cfg parser.
///
/// # Panics
/// When a `[yolo]` section has no valid `classes`.
pub fn conv_roles(cfg_text: &str) -> Vec<ConvRole> {
    #[derive(Default)]
    struct Section {
        header: String,
        activation: String,
        classes: Option<usize>,
    }

    let mut sections: Vec<Section> = Vec::new();
    for line in cfg_text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        if line.starts_with('[') {
            sections.push(Section { header: line.to_string(), ..Section::default() });
        } else if let (Some(section), Some((key, value))) = (sections.last_mut(), line.split_once('=')) {
            match key.trim() {
                "activation" => section.activation = value.trim().to_string(),
                "classes" => section.classes = Some(value.trim().parse().expect("classes is a whole number")),
                _ => {}
            }
        }
    }

    let mut roles = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        if !matches!(section.header.as_str(), "[convolutional]" | "[conv]") {
            continue;
        }
        let next = sections.get(index + 1);
        let role = match next.map(|next| next.header.as_str()) {
            Some("[shortcut]") => ConvRole::ResidualBranch,
            Some("[yolo]") => {
                let classes = next.and_then(|next| next.classes).expect("a [yolo] section without classes");
                ConvRole::Head { entries_per_anchor: 5 + classes }
            }
            _ if section.activation == "mish" => ConvRole::PlainMish,
            _ => ConvRole::Plain,
        };
        roles.push(role);
    }
    roles
}

/// Writes a synthetic weights file for a network with the given convolution
/// layout and roles (both in cfg order), seeded by `seed`.
///
/// # Panics
/// When `layout` and `roles` differ in length, or a layer has no filters.
pub fn write_weights(
    path: &Path,
    layout: &[ConvParamsLayout],
    roles: &[ConvRole],
    version: HeaderVersion,
    seed: u64,
) -> io::Result<()> {
    assert_eq!(
        layout.len(),
        roles.len(),
        "weights_layout lists {} convolutions but the cfg has {} [convolutional] sections",
        layout.len(),
        roles.len()
    );

    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    match version {
        HeaderVersion::Seen64 => {
            for field in [0i32, 2, 5] {
                out.write_all(&field.to_le_bytes())?;
            }
            out.write_all(&0u64.to_le_bytes())?;
        }
        HeaderVersion::Seen32 => {
            for field in [0i32, 1, 0] {
                out.write_all(&field.to_le_bytes())?;
            }
            out.write_all(&0u32.to_le_bytes())?;
        }
    }

    let mut rng = SplitMix64::new(seed);
    for (conv, role) in layout.iter().zip(roles) {
        assert!(conv.filters > 0, "a convolution without filters in the layout: {conv:?}");
        let filters = conv.filters;
        if conv.batch_normalize {
            write_uniform(&mut out, &mut rng, filters, -0.1, 0.1)?; // biases (batch-norm shift)
            write_uniform(&mut out, &mut rng, filters, 8.0, 12.0)?; // scales
            write_uniform(&mut out, &mut rng, filters, -0.1, 0.1)?; // rolling means
            write_uniform(&mut out, &mut rng, filters, 80.0, 120.0)?; // rolling variances
        } else {
            for filter in 0..filters {
                let (_, range) = role.filter_init(filter);
                write_uniform(&mut out, &mut rng, 1, -range, range)?;
            }
        }

        // Darknet stores the kernel filter by filter. A uniform distribution
        // on [-a, a] has variance a²/3.
        assert_eq!(conv.weights % filters, 0, "kernel size is not a multiple of the filter count: {conv:?}");
        let fan_in = conv.weights / filters;
        for filter in 0..filters {
            let (gain, _) = role.filter_init(filter);
            let limit = (3.0 * gain / fan_in.max(1) as f32).sqrt();
            write_uniform(&mut out, &mut rng, fan_in, -limit, limit)?;
        }
    }
    out.flush()
}

fn write_uniform(out: &mut impl Write, rng: &mut SplitMix64, count: usize, low: f32, high: f32) -> io::Result<()> {
    // Chunks keep the many small writes out of the debug-built loop.
    const CHUNK: usize = 1 << 16;
    let mut bytes = Vec::with_capacity(CHUNK.min(count) * 4);
    let mut remaining = count;
    while remaining > 0 {
        let chunk = remaining.min(CHUNK);
        bytes.clear();
        for _ in 0..chunk {
            bytes.extend_from_slice(&rng.uniform(low, high).to_le_bytes());
        }
        out.write_all(&bytes)?;
        remaining -= chunk;
    }
    Ok(())
}
