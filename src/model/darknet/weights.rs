//! The `.weights` file: a small header, then each convolution's parameters in
//! layer order as little-endian f32, with batch normalisation folded into the
//! convolution on load.

use std::path::Path;

use super::layers::{Convolution, LayerKind, Network};
use super::DarknetError;

/// Darknet adds this to the variance before the square root (`normalize_cpu`
/// and `fuse_conv_batchnorm` in AlexeyAB/darknet). OpenCV's darknet importer
/// uses 1e-6, so its outputs differ slightly from darknet's on real weights.
const BATCH_NORM_EPSILON: f64 = 0.00001;

/// How many parameters one convolution stores, in file order: biases, then
/// (with batch normalisation) scales, rolling means and rolling variances,
/// each `filters` long, then the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParamsLayout {
    pub filters: usize,
    pub batch_normalize: bool,
    /// Kernel weights: filters × input channels / groups × size × size.
    pub weights: usize,
}

impl ConvParamsLayout {
    fn of(conv: &Convolution) -> ConvParamsLayout {
        ConvParamsLayout { filters: conv.filters, batch_normalize: conv.batch_normalize, weights: conv.kernel_len() }
    }

    /// Number of f32 values this layer occupies in the file.
    pub fn len(&self) -> usize {
        let per_filter = if self.batch_normalize { 4 } else { 1 };
        self.filters * per_filter + self.weights
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lists the parameter layout of every convolution of `network`, in file order.
pub fn layout(network: &Network) -> Vec<ConvParamsLayout> {
    network
        .layers
        .iter()
        .filter_map(|layer| match &layer.kind {
            LayerKind::Convolution(conv) => Some(ConvParamsLayout::of(conv)),
            _ => None,
        })
        .collect()
}

/// A convolution's kernel (output, input, y, x order) and bias after folding batch normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParams {
    pub kernel: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Size of the header: major, minor, revision (i32 each), then `seen`.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let word = |at: usize| bytes.get(at..at + 4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let (major, minor) = (word(0)?, word(4)?);
    word(8)?;
    // Darknet stores `seen` as 64 bits from format version 0.2 on, 32 bits before.
    let seen_len = if major * 10 + minor >= 2 { 8 } else { 4 };
    Some(12 + seen_len).filter(|&len| bytes.len() >= len)
}

/// Reads `path` and returns the parameters of every convolution in `network`, in layer order.
///
/// # Errors
/// The file cannot be read, its header is incomplete, or its size differs
/// from what the network needs (both byte counts are in the message).
pub fn read_weights(path: &Path, network: &Network) -> Result<Vec<ConvParams>, DarknetError> {
    let bytes = std::fs::read(path).map_err(|source| DarknetError::Io {
        action: "reading weights",
        path: path.display().to_string(),
        source,
    })?;
    parse_weights(&bytes, &path.display().to_string(), network)
}

/// Parses a weights file already in memory; `file` names it in errors.
pub fn parse_weights(bytes: &[u8], file: &str, network: &Network) -> Result<Vec<ConvParams>, DarknetError> {
    let layout = layout(network);
    let values: usize = layout.iter().map(ConvParamsLayout::len).sum();
    let header = header_len(bytes).ok_or_else(|| DarknetError::WeightsSize {
        file: file.into(),
        cfg: network.file.clone(),
        expected: 20 + 4 * values,
        found: bytes.len(),
    })?;
    let expected = header + 4 * values;
    if bytes.len() != expected {
        return Err(DarknetError::WeightsSize {
            file: file.into(),
            cfg: network.file.clone(),
            expected,
            found: bytes.len(),
        });
    }

    let mut floats = bytes[header..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut take = |count: usize| -> Vec<f32> { floats.by_ref().take(count).collect() };
    Ok(layout
        .iter()
        .map(|conv| {
            let bias = take(conv.filters);
            let norm = conv.batch_normalize.then(|| (take(conv.filters), take(conv.filters), take(conv.filters)));
            let kernel = take(conv.weights);
            match norm {
                None => ConvParams { kernel, bias },
                Some((scales, means, variances)) => fold_batch_norm(kernel, &bias, &scales, &means, &variances),
            }
        })
        .collect())
}

/// Folds `scale · (conv − mean) / √(variance + ε) + bias` into the kernel and
/// bias, in double precision as darknet's `fuse_conv_batchnorm` does.
fn fold_batch_norm(mut kernel: Vec<f32>, bias: &[f32], scales: &[f32], means: &[f32], variances: &[f32]) -> ConvParams {
    let per_filter = kernel.len() / bias.len().max(1);
    let mut folded_bias = Vec::with_capacity(bias.len());
    for (filter, weights) in kernel.chunks_mut(per_filter.max(1)).enumerate() {
        let factor = scales[filter] as f64 / (variances[filter] as f64 + BATCH_NORM_EPSILON).sqrt();
        weights.iter_mut().for_each(|w| *w = (*w as f64 * factor) as f32);
        folded_bias.push((bias[filter] as f64 - means[filter] as f64 * factor) as f32);
    }
    ConvParams { kernel, bias: folded_bias }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_follows_version() {
        let mut old = vec![0u8; 16];
        old[4] = 1; // minor 1: 32-bit seen
        assert_eq!(header_len(&old), Some(16));
        let mut new = vec![0u8; 20];
        new[4] = 2; // minor 2: 64-bit seen
        assert_eq!(header_len(&new), Some(20));
        assert_eq!(header_len(&new[..19]), None);
    }

    #[test]
    fn batch_norm_folds_into_kernel_and_bias() {
        let folded = fold_batch_norm(vec![1.0, 2.0, 3.0, 4.0], &[0.5, -1.0], &[2.0, 1.0], &[1.0, 0.0], &[4.0, 1.0]);
        // Darknet's epsilon is 1e-5, written out so that a changed constant fails here.
        let factor0 = 2.0 / (4.0f64 + 1e-5).sqrt();
        let factor1 = 1.0 / (1.0f64 + 1e-5).sqrt();
        let expected_kernel = [factor0, 2.0 * factor0, 3.0 * factor1, 4.0 * factor1].map(|w| w as f32);
        assert_eq!(folded.kernel, expected_kernel.to_vec());
        assert_eq!(folded.bias, vec![(0.5 - factor0) as f32, -1.0]);
    }
}
