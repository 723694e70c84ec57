//! `edgedet check`: validate a config file, the paths it names and the model
//! it loads, without connecting to MQTT or reading frames.

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
    crate::frame_source::check_programs(&config.cameras)?;
    crate::daemon::load_model(&config)?;
    let mut checked = vec![&config.model.spec];
    for camera in &config.cameras {
        if let Some(model) = camera.model.as_ref().filter(|model| !checked.contains(&&model.spec)) {
            crate::daemon::load_model_spec(&model.spec)?;
            checked.push(&model.spec);
        }
    }
    super::write_stdout(&summary(&config))?;
    Ok(())
}

fn summary(config: &Config) -> String {
    use std::fmt::Write;

    let mqtt = &config.mqtt;
    let mut text = String::new();
    let _ = writeln!(text, "{}: valid", config.path.display());
    let _ = writeln!(text, "device: {}", config.device_id);
    let _ = writeln!(
        text,
        "model: {} (threshold {}, NMS threshold {})",
        config.model.spec.path.display(),
        config.model.detector.threshold,
        config.model.detector.nms_threshold
    );
    let broker = if mqtt.embedded_broker { "embedded broker on" } else { "broker" };
    let _ = writeln!(
        text,
        "mqtt: {broker} {}:{} as {}, topics under {}/{}/",
        mqtt.host, mqtt.port, mqtt.client_id, mqtt.topic_prefix, config.device_id
    );
    for camera in &config.cameras {
        let _ = writeln!(text, "camera {}: {}", camera.name, describe_camera(camera));
    }
    text
}

fn describe_camera(camera: &CameraConfig) -> String {
    let what = match camera.source {
        SourceKind::Image => format!("image {}", camera.path.display()),
        SourceKind::Folder => match list_images(&camera.path) {
            Ok(images) => format!("folder {} ({} JPEG/PNG files)", camera.path.display(), images.len()),
            Err(error) => format!("folder {} (cannot be listed: {error})", camera.path.display()),
        },
        // The source's own description hides a URL's password.
        SourceKind::Stream | SourceKind::Device | SourceKind::Rpicam => crate::frame_source::open(camera).description(),
    };
    // Live cameras are retried for ever, whatever the value of `loop`.
    let live = matches!(camera.source, SourceKind::Device | SourceKind::Rpicam);
    let looping = if camera.looping || live { "looping" } else { "once" };
    let rate = match camera.frame_interval {
        Some(interval) => format!("one frame every {} ms at most", interval.as_millis()),
        None => "no rate limit".to_string(),
    };
    match &camera.model {
        Some(model) => format!(
            "{what}, {looping}, {rate}, own model {} (threshold {}, NMS threshold {})",
            model.spec.path.display(),
            model.detector.threshold,
            model.detector.nms_threshold
        ),
        None => format!("{what}, {looping}, {rate}"),
    }
}
