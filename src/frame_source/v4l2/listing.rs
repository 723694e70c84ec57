//! The device list that `edgedet cameras` prints.
//!
//! [`find_nodes`] finds the `/dev/video*` nodes and the stable
//! `/dev/v4l/by-id` and `/dev/v4l/by-path` names that point at them;
//! [`describe`] probes each node, and [`format_report`] writes what each
//! offers and whether a `device` source could use it. This module only
//! reads: it sets no format and starts no stream.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::device::{DeviceOpener, FrameIntervals, FrameSizes};
use super::negotiate::{self, fourcc_text, CaptureRequest, DeviceProfile, DEFAULT_SIZE};

/// One device node and what probing it found.
#[derive(Debug)]
pub struct DeviceEntry {
    /// Such as `/dev/video0`.
    pub node: PathBuf,
    /// Symlinks under `/dev/v4l` that resolve to the node.
    pub links: Vec<PathBuf>,
    /// The device's capabilities and formats, or the reason they could not be read.
    pub profile: Result<DeviceProfile, String>,
}

/// Returns the `video*` nodes of `dev_dir` in numeric order, each with the
/// `v4l/by-id` and `v4l/by-path` symlinks that point at it. A missing
/// folder gives no nodes.
pub fn find_nodes(dev_dir: &Path) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dev_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();

    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for folder in ["v4l/by-id", "v4l/by-path"] {
        for entry in std::fs::read_dir(dev_dir.join(folder)).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::canonicalize(entry.path()) {
                links.push((entry.path(), target));
            }
        }
    }
    links.sort();

    nodes
        .into_iter()
        .map(|(_, node)| {
            let resolved = std::fs::canonicalize(&node).unwrap_or_else(|_| node.clone());
            let names = links.iter().filter(|(_, target)| *target == resolved).map(|(link, _)| link.clone()).collect();
            (node, names)
        })
        .collect()
}

/// Opens and probes each node. A node that cannot be opened or queried is
/// listed with the error.
pub fn describe(nodes: Vec<(PathBuf, Vec<PathBuf>)>, opener: &mut dyn DeviceOpener) -> Vec<DeviceEntry> {
    nodes
        .into_iter()
        .map(|(node, links)| {
            let profile = match opener.open(&node) {
                Ok(device) => negotiate::probe(device.as_ref()).map_err(|error| format!("querying failed: {error}")),
                Err(error) => Err(format!("opening failed: {error}")),
            };
            DeviceEntry { node, links, profile }
        })
        .collect()
}

/// Writes the report: per device its names, driver, card, bus, formats with
/// sizes and rates, and a verdict. `request` is what the verdict's choice
/// assumes, normally [`DEFAULT_SIZE`] at the driver's rate. `dev_dir` is the
/// folder that was searched, named when it has no devices.
pub fn format_report(entries: &[DeviceEntry], request: &CaptureRequest, dev_dir: &Path) -> String {
    if entries.is_empty() {
        return format!("no V4L2 video devices found: {} has no video* nodes\n", dev_dir.display());
    }

    let mut report = String::new();
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            report.push('\n');
        }
        let _ = writeln!(report, "{}", entry.node.display());
        for link in &entry.links {
            let _ = writeln!(report, "  also {}", link.display());
        }
        let profile = match &entry.profile {
            Ok(profile) => profile,
            Err(message) => {
                let _ = writeln!(report, "  not usable: {message}");
                continue;
            }
        };
        let caps = &profile.caps;
        let _ = writeln!(report, "  driver {}, card {:?}, bus {}", caps.driver, caps.card, caps.bus_info);
        for format in &profile.formats {
            let _ = writeln!(
                report,
                "  {} ({}): {}",
                fourcc_text(format.description.fourcc),
                format.description.description,
                sizes_text(format)
            );
        }
        let verdict = match negotiate::choose(profile, request, &entry.node) {
            Ok(choice) => {
                format!("usable: edgedet would capture {} at {}x{}", choice.format, choice.width, choice.height)
            }
            Err(error) => format!("not usable: {error}"),
        };
        let _ = writeln!(report, "  {verdict}");
    }
    report
}

/// Returns the request that `edgedet cameras` judges devices by: 640x480 at the driver's rate.
pub fn default_request() -> CaptureRequest {
    CaptureRequest { size: DEFAULT_SIZE, fps: None, pixel_format: None }
}

fn sizes_text(format: &negotiate::OfferedFormat) -> String {
    if format.sizes.is_empty() {
        return "sizes not listed by the driver".to_string();
    }
    let mut parts = Vec::new();
    for size in &format.sizes {
        match *size {
            FrameSizes::Discrete { width, height } => {
                let rates = format
                    .intervals
                    .iter()
                    .find(|(w, h, _)| *w == width && *h == height)
                    .map(|(_, _, intervals)| rates_text(intervals))
                    .unwrap_or_default();
                parts.push(format!("{width}x{height}{rates}"));
            }
            FrameSizes::Stepwise { min_width, max_width, min_height, max_height, .. } => {
                parts.push(format!("{min_width}x{min_height} to {max_width}x{max_height}"));
            }
        }
    }
    parts.join(", ")
}

/// Writes rates as ` at 30/15 fps`, or nothing when none are listed.
fn rates_text(intervals: &[FrameIntervals]) -> String {
    let rate = |fraction: super::device::Fraction| {
        fraction.fps().map_or("?".to_string(), |fps| format!("{}", (fps * 100.0).round() / 100.0))
    };
    let rates: Vec<String> = intervals
        .iter()
        .map(|interval| match *interval {
            FrameIntervals::Discrete(fraction) => rate(fraction),
            FrameIntervals::Stepwise { min, max } => format!("{}-{}", rate(max), rate(min)),
        })
        .collect();
    if rates.is_empty() {
        String::new()
    } else {
        format!(" at {} fps", rates.join("/"))
    }
}
