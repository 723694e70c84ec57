//! `edgedet cameras`: list the V4L2 video devices and whether a `device` source can use each.

use std::path::PathBuf;

use anyhow::Context;

use crate::frame_source::v4l2::device::V4l2Opener;
use crate::frame_source::v4l2::listing::{default_request, describe, find_nodes, format_report};

#[derive(Debug, clap::Args)]
pub struct CamerasArgs {
    /// Folder that contains the video* device nodes and the v4l/by-id and v4l/by-path links.
    #[arg(long, value_name = "DIR", default_value = "/dev")]
    dev: PathBuf,
}

pub fn run(args: CamerasArgs) -> anyhow::Result<()> {
    let entries = describe(find_nodes(&args.dev), &mut V4l2Opener);
    super::write_stdout(&format_report(&entries, &default_request(), &args.dev))
        .context("writing the device list to stdout")?;
    Ok(())
}
