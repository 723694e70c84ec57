//! `edgedet check`: validate a config file and the paths it names, without
//! loading the model or connecting to MQTT.

use std::path::PathBuf;

use crate::config::{CameraConfig, Config, SourceKind};
use crate::frame_source::list_images;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Config file (TOML) to validate.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    config.check_files()?;
    print_summary(&config);
    Ok(())
}

fn print_summary(config: &Config) {
    let mqtt = &config.mqtt;
    println!("{}: valid", config.path.display());
    println!("device: {}", config.device_id);
    println!(
        "model: {} (threshold {}, NMS threshold {})",
        config.model.spec.path.display(),
        config.model.detector.threshold,
        config.model.detector.nms_threshold
    );
    let broker = if mqtt.embedded_broker { "embedded broker on" } else { "broker" };
    println!(
        "mqtt: {broker} {}:{} as {}, topics under {}/{}/",
        mqtt.host, mqtt.port, mqtt.client_id, mqtt.topic_prefix, config.device_id
    );
    for camera in &config.cameras {
        println!("camera {}: {}", camera.name, describe_camera(camera));
    }
}

fn describe_camera(camera: &CameraConfig) -> String {
    let what = match camera.source {
        SourceKind::Image => format!("image {}", camera.path.display()),
        SourceKind::Folder => match list_images(&camera.path) {
            Ok(images) => format!("folder {} ({} JPEG/PNG files)", camera.path.display(), images.len()),
            Err(error) => format!("folder {} (cannot be listed: {error})", camera.path.display()),
        },
    };
    let looping = if camera.looping { "looping" } else { "once" };
    let rate = match camera.frame_interval {
        Some(interval) => format!("one frame every {} ms at most", interval.as_millis()),
        None => "no rate limit".to_string(),
    };
    format!("{what}, {looping}, {rate}")
}
