//! Turns cfg sections into typed layers with their output shapes.
//!
//! Every key that changes inference is read here; keys that only matter for
//! training are listed per section and ignored. Anything else is an error
//! naming the file, line and key, so an unsupported feature never yields a
//! silently different network.

use std::path::Path;

use super::cfg::{CfgFile, SectionReader};
use super::DarknetError;
use crate::model::meta::{NmsKind, YoloHead};

/// Activation functions darknet applies after a convolution or shortcut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Linear,
    /// Darknet's leaky ReLU, slope 0.1.
    Leaky,
    Relu,
    Logistic,
    Mish,
    Swish,
}

impl Activation {
    fn parse(name: &str) -> Option<Activation> {
        Some(match name {
            "linear" => Activation::Linear,
            "leaky" => Activation::Leaky,
            "relu" => Activation::Relu,
            "logistic" => Activation::Logistic,
            "mish" => Activation::Mish,
            "swish" => Activation::Swish,
            _ => return None,
        })
    }
}

/// Channels, height and width of a layer's output (batch is always 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Convolution {
    pub filters: usize,
    pub size: usize,
    pub stride: usize,
    /// Zero padding on every side, in pixels.
    pub padding: usize,
    pub groups: usize,
    pub batch_normalize: bool,
    pub activation: Activation,
    pub input_channels: usize,
}

impl Convolution {
    /// Number of kernel weights (without biases and batch-norm parameters).
    pub fn kernel_len(&self) -> usize {
        self.filters * (self.input_channels / self.groups) * self.size * self.size
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Convolution(Convolution),
    /// Concatenates the listed layers along channels, taking group `group_id`
    /// of `groups` equal channel slices from each.
    Route {
        inputs: Vec<usize>,
        groups: usize,
        group_id: usize,
    },
    /// Adds the output of layer `from` to the previous layer's output.
    Shortcut {
        from: usize,
        activation: Activation,
    },
    /// Max pooling; out-of-image pixels never win. `pad_begin`/`pad_end` are
    /// per axis (y, x), derived from darknet's `padding`.
    MaxPool {
        size: usize,
        stride_y: usize,
        stride_x: usize,
        pad_begin: [usize; 2],
        pad_end: [usize; 2],
    },
    /// Nearest-neighbour upsampling by an integer factor.
    Upsample {
        stride: usize,
    },
    /// A detection head; its raw input is a model output.
    Yolo(YoloHead),
}

/// One layer, with the cfg line of its section for messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: LayerKind,
    pub line: usize,
    pub output: Shape,
}

/// A whole darknet network, checked for consistent shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub file: String,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub letter_box: bool,
    pub classes: usize,
    pub nms_kind: NmsKind,
    pub beta_nms: f32,
    pub layers: Vec<Layer>,
}

/// Keys of `[net]` that only steer training or data augmentation.
const NET_TRAINING_KEYS: &[&str] = &[
    "batch",
    "subdivisions",
    "momentum",
    "decay",
    "angle",
    "saturation",
    "exposure",
    "hue",
    "learning_rate",
    "burn_in",
    "max_batches",
    "policy",
    "steps",
    "scales",
    "step",
    "gamma",
    "power",
    "mosaic",
    "mosaic_bound",
    "cutmix",
    "mixup",
    "blur",
    "gaussian_noise",
    "flip",
    "adam",
    "B1",
    "B2",
    "eps",
    "max_chart_loss",
    "seq_scales",
    "track",
    "time_steps",
    "augment_speed",
    "sequential_subdivisions",
    "try_fix_nan",
    "loss_scale",
    "dynamic_minibatch",
    "optimized_memory",
    "workspace_size_limit_MB",
    "label_smooth_eps",
    "resize_step",
    "random",
    "contrastive",
    "contrastive_jit_flip",
    "contrastive_color",
    "unsupervised",
    "equidistant_point",
    "badlabels_rejection_percentage",
    "num_sigmas_reject_badlabels",
    "weights_reject_freq",
    "ema_alpha",
    "adversarial_lr",
    "attention",
    "show_imgs",
    "max_crop",
    "min_crop",
    "aspect",
    "inputs",
    "max_epochs",
    "rescore",
    "burnin_update",
    "init_sigmas",
    "train_imgs",
];

const CONV_TRAINING_KEYS: &[&str] = &["stopbackward", "train", "dontload", "dontloadscales", "learning_rate"];

const YOLO_TRAINING_KEYS: &[&str] = &[
    "jitter",
    "ignore_thresh",
    "truth_thresh",
    "iou_thresh",
    "random",
    "resize",
    "iou_normalizer",
    "cls_normalizer",
    "obj_normalizer",
    "iou_loss",
    "iou_thresh_kind",
    "max_delta",
    "objectness_smooth",
    "counters_per_class",
    "label_smooth_eps",
    "focal_loss",
    "max",
    "show_details",
    "embedding_layer",
    "track_history_size",
    "sim_thresh",
    "dets_for_track",
    "dets_for_show",
    "track_ciou_norm",
    "map",
];

/// Reads a cfg file into a [`Network`].
///
/// `size` overrides the `[net]` width and height, which these fully
/// convolutional networks allow.
///
/// # Errors
/// Unreadable file, syntax errors, unsupported sections, keys or values, and
/// layers whose inputs do not fit together; each names the file and line.
pub fn read_network(path: &Path, size: Option<(usize, usize)>) -> Result<Network, DarknetError> {
    let cfg = CfgFile::read(path)?;
    build_network(&cfg, size)
}

/// Builds a [`Network`] from already split cfg text.
pub fn build_network(cfg: &CfgFile, size: Option<(usize, usize)>) -> Result<Network, DarknetError> {
    let file = cfg.file.as_str();
    let (net_section, layer_sections) = match cfg.sections.split_first() {
        Some((first, rest)) if first.name == "net" || first.name == "network" => (first, rest),
        Some((first, _)) => {
            return Err(DarknetError::Layer {
                file: file.into(),
                line: first.line,
                section: first.name.clone(),
                message: "the first section must be [net]".into(),
            })
        }
        None => return Err(DarknetError::Syntax { file: file.into(), line: 1, message: "no sections found".into() }),
    };

    let mut net = SectionReader::new(file, net_section);
    let mut width = positive(&mut net, "width", 416)?;
    let mut height = positive(&mut net, "height", 416)?;
    let channels = positive(&mut net, "channels", 3)?;
    let letter_box = flag(&mut net, "letter_box")?;
    net.finish(NET_TRAINING_KEYS)?;
    if let Some((w, h)) = size {
        width = w;
        height = h;
    }
    if width % 32 != 0 || height % 32 != 0 {
        return Err(DarknetError::Layer {
            file: file.into(),
            line: net_section.line,
            section: "net".into(),
            message: format!(
                "input size {width}x{height} is not a multiple of 32 in both directions, which these networks need"
            ),
        });
    }

    let input = Shape { channels, height, width };
    let mut layers: Vec<Layer> = Vec::with_capacity(layer_sections.len());
    let mut yolo_sections = Vec::new();
    for section in layer_sections {
        let index = layers.len();
        let previous = layers.last().map(|layer| layer.output).unwrap_or(input);
        let mut reader = SectionReader::new(file, section);
        let (kind, output) = match section.name.as_str() {
            "convolutional" | "conv" => convolution(&mut reader, previous)?,
            "route" => route(&mut reader, index, &layers)?,
            "shortcut" => shortcut(&mut reader, index, previous, &layers)?,
            "maxpool" | "max" => maxpool(&mut reader, previous)?,
            "upsample" => upsample(&mut reader, previous)?,
            "yolo" => {
                let kind = yolo(&mut reader, previous, &mut yolo_sections)?;
                (kind, previous)
            }
            other => {
                return Err(DarknetError::Layer {
                    file: file.into(),
                    line: section.line,
                    section: other.into(),
                    message: format!("[{other}] layers are not supported (supported: convolutional, route, shortcut, maxpool, upsample, yolo)"),
                })
            }
        };
        reader.finish(training_keys(&section.name))?;
        layers.push(Layer { kind, line: section.line, output });
    }

    let Some(&(_, classes, nms_kind, beta_nms)) = yolo_sections.last() else {
        return Err(DarknetError::Layer {
            file: file.into(),
            line: net_section.line,
            section: "net".into(),
            message: "the network has no [yolo] layer, so there is nothing to detect with".into(),
        });
    };
    if let Some(&(line, other, _, _)) = yolo_sections.iter().find(|entry| entry.1 != classes) {
        return Err(DarknetError::Layer {
            file: file.into(),
            line,
            section: "yolo".into(),
            message: format!("classes={other} differs from the last [yolo] layer's classes={classes}"),
        });
    }

    Ok(Network { file: file.into(), width, height, channels, letter_box, classes, nms_kind, beta_nms, layers })
}

fn positive<'a>(reader: &mut SectionReader<'a>, key: &'a str, default: i64) -> Result<usize, DarknetError> {
    let Some(option) = reader.raw(key) else { return Ok(default.max(1) as usize) };
    match option.value.parse::<i64>() {
        Ok(value) if value > 0 => Ok(value as usize),
        _ => Err(reader.invalid(option, "a positive integer")),
    }
}

fn flag<'a>(reader: &mut SectionReader<'a>, key: &'a str) -> Result<bool, DarknetError> {
    let Some(option) = reader.raw(key) else { return Ok(false) };
    match option.value.as_str() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(reader.invalid(option, "0 or 1")),
    }
}

/// Rejects a key whose value differs from the one inference supports.
fn require_default<'a>(
    reader: &mut SectionReader<'a>,
    key: &'a str,
    default: i64,
    why: &str,
) -> Result<(), DarknetError> {
    let Some(option) = reader.raw(key) else { return Ok(()) };
    if option.value.parse::<i64>() != Ok(default) {
        return Err(reader.invalid(option, &format!("{default} ({why})")));
    }
    Ok(())
}

fn activation(reader: &mut SectionReader<'_>) -> Result<Activation, DarknetError> {
    let Some(option) = reader.raw("activation") else { return Ok(Activation::Linear) };
    Activation::parse(&option.value)
        .ok_or_else(|| reader.invalid(option, "one of linear, leaky, relu, logistic, mish, swish"))
}

fn convolution(reader: &mut SectionReader<'_>, input: Shape) -> Result<(LayerKind, Shape), DarknetError> {
    let filters = positive(reader, "filters", 1)?;
    let size = positive(reader, "size", 1)?;
    let stride = positive(reader, "stride", 1)?;
    let groups = positive(reader, "groups", 1)?;
    let pad = flag(reader, "pad")?;
    let padding_key = reader.int("padding", 0)?;
    let padding = if pad { size / 2 } else { padding_key.max(0) as usize };
    let batch_normalize = flag(reader, "batch_normalize")?;
    let activation = activation(reader)?;
    for key in ["stride_x", "stride_y"] {
        if reader.int(key, stride as i64)? != stride as i64 {
            return Err(reader.section_error(format!("{key} different from stride is not supported")));
        }
    }
    require_default(reader, "dilation", 1, "dilated convolutions are not supported")?;
    require_default(reader, "binary", 0, "binary weights are not supported")?;
    require_default(reader, "xnor", 0, "XNOR networks are not supported")?;
    require_default(reader, "antialiasing", 0, "anti-aliased convolutions are not supported")?;
    require_default(reader, "deform", 0, "deformable convolutions are not supported")?;
    require_default(reader, "flipped", 0, "flipped weights are not supported")?;
    if reader.raw("share_index").is_some() {
        return Err(reader.section_error("share_index (weights shared with another layer) is not supported".into()));
    }
    if !input.channels.is_multiple_of(groups) || filters % groups != 0 {
        return Err(reader.section_error(format!(
            "groups={groups} does not divide the {} input channels and {filters} filters",
            input.channels
        )));
    }
    let out =
        |extent: usize| -> Option<usize> { (extent + 2 * padding).checked_sub(size).map(|rest| rest / stride + 1) };
    let (Some(height), Some(width)) = (out(input.height), out(input.width)) else {
        return Err(reader.section_error(format!(
            "kernel size {size} is larger than the padded {}x{} input",
            input.width, input.height
        )));
    };

    let conv = Convolution {
        filters,
        size,
        stride,
        padding,
        groups,
        batch_normalize,
        activation,
        input_channels: input.channels,
    };
    let shape = Shape { channels: filters, height, width };
    Ok((LayerKind::Convolution(conv), shape))
}

/// Resolves a darknet layer reference: negative values count back from `index`.
fn resolve(reader: &SectionReader<'_>, key: &str, value: i64, index: usize) -> Result<usize, DarknetError> {
    let absolute = if value < 0 { index as i64 + value } else { value };
    if absolute < 0 || absolute >= index as i64 {
        return Err(reader.section_error(format!(
            "{key}={value} refers to layer {absolute}, but layer {index} can only use layers 0 to {} (it is past the start of the network or not computed yet)",
            index as i64 - 1
        )));
    }
    Ok(absolute as usize)
}

fn route(reader: &mut SectionReader<'_>, index: usize, layers: &[Layer]) -> Result<(LayerKind, Shape), DarknetError> {
    let references =
        reader.int_list("layers")?.ok_or_else(|| reader.section_error("a [route] needs `layers=`".into()))?;
    if references.is_empty() {
        return Err(reader.section_error("`layers=` lists no layer".into()));
    }
    let groups = positive(reader, "groups", 1)?;
    let group_id = reader.int("group_id", 0)?;
    if group_id < 0 || group_id as usize >= groups {
        return Err(reader.section_error(format!("group_id={group_id} must be between 0 and groups-1={}", groups - 1)));
    }
    reader.raw("stopbackward");

    let inputs =
        references.iter().map(|&value| resolve(reader, "layers", value, index)).collect::<Result<Vec<_>, _>>()?;
    let first = layers[inputs[0]].output;
    let mut channels = 0;
    for &input in &inputs {
        let shape = layers[input].output;
        if shape.height != first.height || shape.width != first.width {
            return Err(reader.section_error(format!(
                "routed layers have different sizes: layer {} is {}x{}, layer {input} is {}x{}",
                inputs[0], first.width, first.height, shape.width, shape.height
            )));
        }
        if !shape.channels.is_multiple_of(groups) {
            return Err(reader.section_error(format!(
                "groups={groups} does not divide the {} channels of layer {input}",
                shape.channels
            )));
        }
        channels += shape.channels / groups;
    }
    let kind = LayerKind::Route { inputs, groups, group_id: group_id as usize };
    Ok((kind, Shape { channels, ..first }))
}

fn shortcut(
    reader: &mut SectionReader<'_>,
    index: usize,
    previous: Shape,
    layers: &[Layer],
) -> Result<(LayerKind, Shape), DarknetError> {
    let references =
        reader.int_list("from")?.ok_or_else(|| reader.section_error("a [shortcut] needs `from=`".into()))?;
    let [reference] = references[..] else {
        return Err(reader.section_error("only a single `from` layer is supported".into()));
    };
    let from = resolve(reader, "from", reference, index)?;
    let activation = activation(reader)?;
    if let Some(option) = reader.raw("weights_type") {
        if option.value != "none" {
            return Err(reader.invalid(option, "none (weighted shortcuts are not supported)"));
        }
    }
    reader.raw("weights_normalization");
    if index == 0 {
        return Err(reader.section_error("a [shortcut] cannot be the first layer".into()));
    }
    let other = layers[from].output;
    if other != previous {
        return Err(reader.section_error(format!(
            "layer {from} ({}x{}x{}) and the previous layer ({}x{}x{}) must have the same shape",
            other.channels, other.height, other.width, previous.channels, previous.height, previous.width
        )));
    }
    Ok((LayerKind::Shortcut { from, activation }, previous))
}

fn maxpool(reader: &mut SectionReader<'_>, input: Shape) -> Result<(LayerKind, Shape), DarknetError> {
    let stride = positive(reader, "stride", 1)?;
    let stride_x = positive(reader, "stride_x", stride as i64)?;
    let stride_y = positive(reader, "stride_y", stride as i64)?;
    let size = positive(reader, "size", stride as i64)?;
    let padding = reader.int("padding", size as i64 - 1)?.max(0) as usize;
    require_default(reader, "maxpool_depth", 0, "pooling across channels is not supported")?;
    require_default(reader, "antialiasing", 0, "anti-aliased pooling is not supported")?;
    require_default(reader, "maxpool_zero_nonmax", 0, "it only matters for training")?;
    reader.raw("out_channels");

    // Darknet's output size is (in + padding - size) / stride + 1, and the
    // window starts padding/2 pixels before the image. The rest of the
    // padding, possibly none, falls after it.
    let out = |extent: usize, stride: usize| (extent + padding).checked_sub(size).map(|rest| rest / stride + 1);
    let (Some(height), Some(width)) = (out(input.height, stride_y), out(input.width, stride_x)) else {
        return Err(
            reader.section_error(format!("pool size {size} is larger than the {}x{} input", input.width, input.height))
        );
    };
    let begin = padding / 2;
    let end = |extent: usize, out: usize, stride: usize| ((out - 1) * stride + size).saturating_sub(extent + begin);
    let kind = LayerKind::MaxPool {
        size,
        stride_y,
        stride_x,
        pad_begin: [begin, begin],
        pad_end: [end(input.height, height, stride_y), end(input.width, width, stride_x)],
    };
    Ok((kind, Shape { channels: input.channels, height, width }))
}

fn upsample(reader: &mut SectionReader<'_>, input: Shape) -> Result<(LayerKind, Shape), DarknetError> {
    let stride = positive(reader, "stride", 2)?;
    if let Some(option) = reader.raw("scale") {
        if option.value.parse::<f32>() != Ok(1.0) {
            return Err(reader.invalid(option, "1 (scaled upsampling is not supported)"));
        }
    }
    let shape = Shape { channels: input.channels, height: input.height * stride, width: input.width * stride };
    Ok((LayerKind::Upsample { stride }, shape))
}

/// Line, classes, NMS kind and beta of each `[yolo]` section, for the network-wide settings.
type YoloSettings = (usize, usize, NmsKind, f32);

fn yolo(reader: &mut SectionReader<'_>, input: Shape, seen: &mut Vec<YoloSettings>) -> Result<LayerKind, DarknetError> {
    let classes = positive(reader, "classes", 20)?;
    let num = positive(reader, "num", 1)?;
    let mask: Vec<usize> = match reader.int_list("mask")? {
        None => (0..num).collect(),
        Some(values) => {
            if values.iter().any(|&m| m < 0 || m as usize >= num) {
                let expected = format!("anchor indices from 0 to num-1={}", num - 1);
                return Err(match reader.raw("mask") {
                    Some(option) => reader.invalid(option, &expected),
                    None => reader.section_error(expected),
                });
            }
            values.into_iter().map(|m| m as usize).collect()
        }
    };
    let flat = reader.float_list("anchors")?.unwrap_or_default();
    if flat.len() != 2 * num {
        return Err(reader.section_error(format!(
            "anchors lists {} numbers but num={num} needs {} (a width and a height per anchor)",
            flat.len(),
            2 * num
        )));
    }
    let anchors = flat.chunks(2).map(|pair| [pair[0], pair[1]]).collect();
    let scale_x_y = reader.float("scale_x_y", 1.0)?;
    let new_coords = flag(reader, "new_coords")?;
    let nms_kind = match reader.raw("nms_kind") {
        None => NmsKind::Default,
        Some(option) => match option.value.as_str() {
            "default" => NmsKind::Default,
            "greedynms" => NmsKind::Greedy,
            "diounms" => NmsKind::Diou,
            "cornersnms" => NmsKind::Corners,
            _ => return Err(reader.invalid(option, "one of default, greedynms, diounms, cornersnms")),
        },
    };
    let beta_nms = reader.float("beta_nms", 0.6)?;

    let expected = mask.len() * (5 + classes);
    if input.channels != expected {
        return Err(reader.section_error(format!(
            "the layer feeding this [yolo] has {} channels, but {} anchors × (5 + {classes} classes) needs {expected}",
            input.channels,
            mask.len()
        )));
    }
    seen.push((reader.section().line, classes, nms_kind, beta_nms));
    Ok(LayerKind::Yolo(YoloHead { anchors, mask, scale_x_y, new_coords }))
}

/// Training-only keys of each section kind, for [`SectionReader::finish`].
pub fn training_keys(section: &str) -> &'static [&'static str] {
    match section {
        "net" | "network" => NET_TRAINING_KEYS,
        "convolutional" | "conv" => CONV_TRAINING_KEYS,
        "yolo" => YOLO_TRAINING_KEYS,
        _ => &["stopbackward"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::darknet::weights::layout;

    fn fixture(name: &str) -> Network {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/darknet").join(name);
        read_network(&path, None).unwrap()
    }

    fn parse(text: &str) -> Result<Network, DarknetError> {
        build_network(&CfgFile::parse(text, "t.cfg").unwrap(), None)
    }

    fn head_grids(network: &Network) -> Vec<(usize, usize)> {
        let mut grids = Vec::new();
        for layer in &network.layers {
            if matches!(layer.kind, LayerKind::Yolo(_)) {
                grids.push((layer.output.width, layer.output.height));
            }
        }
        grids
    }

    #[test]
    fn every_fixture_cfg_builds() {
        for (name, heads) in [
            ("yolov4.cfg", vec![(76, 76), (38, 38), (19, 19)]),
            ("yolov4-tiny.cfg", vec![(13, 13), (26, 26)]),
            ("yolov4-tiny-3l.cfg", vec![(19, 19), (38, 38), (76, 76)]),
            ("yolov4-csp.cfg", vec![(64, 64), (32, 32), (16, 16)]),
            ("yolov4x-mish.cfg", vec![(80, 80), (40, 40), (20, 20)]),
            ("yolov3-tiny.cfg", vec![(13, 13), (26, 26)]),
            ("yolov7-tiny.cfg", vec![(52, 52), (26, 26), (13, 13)]),
        ] {
            let network = fixture(name);
            assert_eq!(head_grids(&network), heads, "{name}");
            assert_eq!(network.classes, 80, "{name}");
        }
    }

    #[test]
    fn parameter_counts_match_the_official_weights_files() {
        // Official files: yolov4.weights 257,717,640 bytes, yolov4-tiny.weights
        // 24,251,276 bytes, each with a 20-byte header before the f32 values.
        let count = |name: &str| layout(&fixture(name)).iter().map(|l| l.len()).sum::<usize>();
        assert_eq!(count("yolov4.cfg") * 4 + 20, 257_717_640);
        assert_eq!(count("yolov4-tiny.cfg") * 4 + 20, 24_251_276);
    }

    #[test]
    fn settings_of_the_last_yolo_layer_apply() {
        let csp = fixture("yolov4-csp.cfg");
        assert!(csp.letter_box);
        assert_eq!(csp.nms_kind, NmsKind::Diou);
        let tiny = fixture("yolov4-tiny.cfg");
        assert!(!tiny.letter_box);
        assert_eq!(tiny.nms_kind, NmsKind::Greedy);
        assert_eq!(fixture("yolov3-tiny.cfg").nms_kind, NmsKind::Default);
    }

    fn pool_after_conv(pool: &str, size: usize) -> Layer {
        let text = format!("[net]\nwidth={size}\nheight={size}\n[convolutional]\nfilters=255\nsize=1\n{pool}\n[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nnum=3\nclasses=80\n");
        parse(&text).unwrap().layers[1].clone()
    }

    #[test]
    fn maxpool_padding_follows_darknet() {
        // Size 2, stride 1 (yolov3-tiny): same size out, the extra pixel after the image.
        let layer = pool_after_conv("[maxpool]\nsize=2\nstride=1", 32);
        assert_eq!(layer.output.width, 32);
        let LayerKind::MaxPool { pad_begin, pad_end, .. } = layer.kind else { panic!("not a pool") };
        assert_eq!((pad_begin, pad_end), ([0, 0], [1, 1]));

        // SPP pools: size 5, stride 1, centred.
        let layer = pool_after_conv("[maxpool]\nsize=5\nstride=1", 32);
        let LayerKind::MaxPool { pad_begin, pad_end, .. } = layer.kind else { panic!("not a pool") };
        assert_eq!((pad_begin, pad_end), ([2, 2], [2, 2]));

        // Size 2, stride 2 halves with no padding used.
        let layer = pool_after_conv("[maxpool]\nsize=2\nstride=2", 64);
        assert_eq!(layer.output.width, 32);
        let LayerKind::MaxPool { pad_begin, pad_end, .. } = layer.kind else { panic!("not a pool") };
        assert_eq!((pad_begin, pad_end), ([0, 0], [0, 0]));
    }

    #[test]
    fn yolo_channels_must_fit_mask_and_classes() {
        let text = "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=254\nsize=1\n[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nnum=3\nclasses=80\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("t.cfg:7: [yolo]"), "{error}");
        assert!(error.contains("254 channels"), "{error}");
        assert!(error.contains("needs 255"), "{error}");
    }

    #[test]
    fn shortcut_shapes_must_agree() {
        let text = "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=8\nsize=1\n[convolutional]\nfilters=16\nsize=1\n[shortcut]\nfrom=-2\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("t.cfg:10: [shortcut]"), "{error}");
        assert!(error.contains("same shape"), "{error}");
    }
}
