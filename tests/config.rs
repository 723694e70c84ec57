//! Config parsing and validation, through the library and through
//! `edgedet check` and `edgedet config --default`.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgedet::config::file::{CameraSection, ConfigFile, DaemonSection, DeviceSection, ModelSection, MqttSection};
use edgedet::config::{Config, ConfigError, SourceKind, DEFAULT_CONFIG};

const CONFIG_PATH: &str = "/etc/edgedet/edgedet.toml";

/// A valid config; tests break it one key at a time.
const VALID: &str = r#"[device]
id = "porch"

[model]
path = "yolov4-tiny.cfg"

[mqtt]
port = 1883

[[cameras]]
name = "door"
source = "image"
path = "door.jpg"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_text(Path::new(CONFIG_PATH), text)
}

fn error_message(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn valid_config_parses() {
    let config = parse(VALID).expect("the valid config parses");
    assert_eq!(config.device_id, "porch");
    assert_eq!(config.mqtt.port, 1883);
    assert_eq!(config.cameras.len(), 1);
    assert_eq!(config.cameras[0].source, SourceKind::Image);
}

#[test]
fn default_config_text_matches_defaults() {
    let file = ConfigFile::parse(Path::new("default.toml"), DEFAULT_CONFIG).expect("the default config parses");

    assert_eq!(file.device, DeviceSection::default());
    assert_eq!(file.daemon, DaemonSection::default());
    assert_eq!(file.mqtt, MqttSection::default());
    assert_eq!(file.model, ModelSection::with_path(file.model.path.clone()));

    let cameras = file.cameras.get_ref();
    assert_eq!(cameras.len(), 1);
    let camera: &CameraSection = cameras[0].get_ref();
    assert!(!camera.looping, "loop defaults to false");
    assert_eq!(camera.interval_ms, None);
    assert_eq!(camera.fps, None);
    assert_eq!(camera.width, None);
    assert_eq!(camera.height, None);
    assert!(!camera.realtime, "realtime defaults to false");
    assert_eq!(camera.pixel_format, None);
}

#[test]
fn default_config_text_validates() {
    let config = Config::from_text(Path::new(CONFIG_PATH), DEFAULT_CONFIG).expect("the default config validates");
    assert_eq!(config.mqtt.host, "127.0.0.1");
    assert_eq!(config.mqtt.topic_prefix, "edgedet");
    assert_eq!(config.mqtt.client_id, format!("edgedet-{}", config.device_id));
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = VALID.replace("port = 1883", "prot = 1883");
    let message = error_message(&text);
    assert!(message.contains("prot"), "{message}");
    assert!(message.contains("mqtt"), "{message}");
    assert!(message.contains(&format!("{CONFIG_PATH}:8:")), "{message}");
}

#[test]
fn unknown_table_is_rejected() {
    let text = format!("{VALID}\n[cameras_extra]\nx = 1\n");
    let message = error_message(&text);
    assert!(message.contains("cameras_extra"), "{message}");
}

#[test]
fn precision_auto_and_samples_are_read() {
    let text = VALID.replace(
        "path = \"yolov4-tiny.cfg\"",
        "path = \"yolov4-tiny.cfg\"\nprecision = \"auto\"\nsamples = \"frames\"",
    );
    let config = parse(&text).expect("precision auto parses");
    assert_eq!(config.model.spec.precision, edgedet::model::PrecisionSetting::Auto);
    assert_eq!(config.model.spec.samples_dir(), Path::new("/etc/edgedet/frames"));

    let message =
        error_message(&VALID.replace("path = \"yolov4-tiny.cfg\"", "path = \"yolov4-tiny.cfg\"\nprecision = \"fast\""));
    assert!(message.contains("model.precision"), "{message}");
    assert!(message.contains("expected f32, f16, int8 or auto"), "{message}");
}

#[test]
fn camera_workers_default_and_zero() {
    assert_eq!(parse(VALID).unwrap().cameras[0].workers, 1);
    let two = parse(&format!("{VALID}workers = 2\n")).expect("workers = 2 parses");
    assert_eq!(two.cameras[0].workers, 2);
    let message = error_message(&format!("{VALID}workers = 0\n"));
    assert!(message.contains("cameras"), "{message}");
    assert!(message.contains("workers"), "{message}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let text = VALID.replace("port = 1883", "port = \"1883\"");
    let message = error_message(&text);
    assert!(message.contains("mqtt.port"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
    assert!(message.contains(&format!("{CONFIG_PATH}:8:8:")), "{message}");
}

#[test]
fn port_zero_is_rejected() {
    let text = VALID.replace("port = 1883", "port = 0");
    let message = error_message(&text);
    assert!(message.contains("mqtt.port"), "{message}");
    assert!(message.contains("invalid port 0"), "{message}");
    assert!(message.contains(":8:"), "{message}");
}

#[test]
fn port_above_range_is_rejected() {
    let text = VALID.replace("port = 1883", "port = 70000");
    let message = error_message(&text);
    assert!(message.contains("mqtt.port"), "{message}");
    assert!(message.contains(":8:"), "{message}");
}

#[test]
fn threshold_above_one_is_rejected() {
    let text = VALID.replace("path = \"yolov4-tiny.cfg\"", "path = \"yolov4-tiny.cfg\"\nthreshold = 1.5");
    let message = error_message(&text);
    assert!(message.contains("model.threshold"), "{message}");
    assert!(message.contains("1.5"), "{message}");
    assert!(message.contains(":6:"), "{message}");
}

#[test]
fn empty_camera_list_is_rejected() {
    let text = "cameras = []\n".to_string() + VALID.split("[[cameras]]").next().expect("VALID has cameras");
    let message = error_message(&text);
    assert!(message.contains("at least one"), "{message}");
    assert!(message.contains(&format!("{CONFIG_PATH}:1:11:")), "{message}");
}

#[test]
fn missing_camera_list_is_rejected() {
    let text = VALID.split("[[cameras]]").next().expect("VALID has cameras").to_string();
    let message = error_message(&text);
    assert!(message.contains("missing field `cameras`"), "{message}");
    assert!(message.starts_with(&format!("{CONFIG_PATH}: ")), "{message}");
}

#[test]
fn duplicate_camera_names_are_rejected() {
    let second = "\n[[cameras]]\nname = \"door\"\nsource = \"folder\"\npath = \"images\"\n";
    let message = error_message(&format!("{VALID}{second}"));
    assert!(message.contains("\"door\""), "{message}");
    assert!(message.contains("cameras[1].name"), "{message}");
    assert!(message.contains("unique"), "{message}");
    assert!(message.contains(":16:"), "{message}");
}

#[test]
fn camera_names_with_topic_wildcards_are_rejected() {
    for bad in ["front/door", "door+", "#"] {
        let text = VALID.replace("name = \"door\"", &format!("name = \"{bad}\""));
        let message = error_message(&text);
        assert!(message.contains("cameras[0].name"), "{bad}: {message}");
        assert!(message.contains(":11:"), "{bad}: {message}");
    }
}

#[test]
fn unknown_source_kind_is_rejected() {
    let text = VALID.replace("source = \"image\"", "source = \"webcam\"");
    let message = error_message(&text);
    assert!(message.contains("webcam"), "{message}");
    assert!(message.contains(":12:"), "{message}");
}

#[test]
fn interval_and_fps_together_are_rejected() {
    let text = format!("{VALID}interval_ms = 100\nfps = 2.0\n");
    let message = error_message(&text);
    assert!(message.contains("not both"), "{message}");
}

#[test]
fn qos_three_is_rejected() {
    let text = VALID.replace("port = 1883", "qos = 3");
    let message = error_message(&text);
    assert!(message.contains("mqtt.qos"), "{message}");
}

#[test]
fn toml_syntax_error_has_line() {
    let text = VALID.replace("port = 1883", "port = ");
    let message = error_message(&text);
    assert!(message.contains(&format!("{CONFIG_PATH}:8:")), "{message}");
}

// ---- through the binary ----------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn edgedet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgedet")).args(args).output().expect("running edgedet")
}

/// Writes `body` as `edgedet.toml` into `dir` and returns its path.
fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("edgedet.toml");
    std::fs::write(&path, body).expect("writing the config");
    path
}

/// Returns a valid config that names the repository's model and sample images by absolute path.
fn good_config_body() -> String {
    format!(
        r#"[model]
path = "{model}"

[[cameras]]
name = "samples"
source = "folder"
path = "{samples}"
"#,
        model = repo_path("models/yolov4-tiny/yolov4-tiny.cfg").display(),
        samples = repo_path("tests/fixtures/images").display(),
    )
}

#[test]
fn check_accepts_good_config() {
    let dir = tempfile::tempdir().expect("creating a temporary folder");
    let path = write_config(dir.path(), &good_config_body());
    let output = edgedet(&["check", "--config", path.to_str().expect("UTF-8 path")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("samples"), "{stdout}");
}

#[test]
fn check_rejects_invalid_config_with_78() {
    let dir = tempfile::tempdir().expect("creating a temporary folder");
    let body = good_config_body().replace("[[cameras]]", "[mqtt]\nport = 0\n\n[[cameras]]");
    let path = write_config(dir.path(), &body);
    let output = edgedet(&["check", "--config", path.to_str().expect("UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains("mqtt.port"), "{stderr}");
    assert!(stderr.contains(":5:"), "{stderr}");
}

#[test]
fn check_rejects_missing_model_with_78() {
    let dir = tempfile::tempdir().expect("creating a temporary folder");
    let body = good_config_body().replace("yolov4-tiny.cfg", "no-such-model.cfg");
    let path = write_config(dir.path(), &body);
    let output = edgedet(&["check", "--config", path.to_str().expect("UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains("model.path"), "{stderr}");
    assert!(stderr.contains("no-such-model.cfg"), "{stderr}");
}

#[test]
fn check_rejects_missing_config_file_with_78() {
    let output = edgedet(&["check", "--config", "/nonexistent/edgedet.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains("/nonexistent/edgedet.toml"), "{stderr}");
}

#[test]
fn config_default_prints_default_config() {
    let output = edgedet(&["config", "--default"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), DEFAULT_CONFIG);
}

// ---- the rpicam source -------------------------------------------------------

/// [`VALID`] with an `rpicam` camera, `path = "0"` and `keys` on line 14.
fn rpicam(keys: &str) -> String {
    VALID
        .replace("source = \"image\"", "source = \"rpicam\"")
        .replace("path = \"door.jpg\"", &format!("path = \"0\"\n{keys}"))
}

#[test]
fn rpicam_camera_is_accepted() {
    let text = rpicam("width = 1296\nheight = 972\ninterval_ms = 500\nrpicam_args = [\"--rotation\", \"180\"]");
    let config = parse(&text).expect("the rpicam config is valid");
    let camera = &config.cameras[0];
    assert_eq!(camera.source, SourceKind::Rpicam);
    assert_eq!(camera.path, Path::new("0"), "a camera index is not resolved against the config's folder");
    assert_eq!(camera.frame_size, edgedet::config::FrameSize::new(1296, 972));
    assert_eq!(camera.frame_interval, Some(std::time::Duration::from_millis(500)));
    assert_eq!(camera.rpicam_args, ["--rotation", "180"]);
}

#[test]
fn misspelt_rpicam_key_names_key_and_line() {
    let message = error_message(&rpicam("rpicam_arg = [\"--hflip\"]"));
    assert!(message.contains("unknown field `rpicam_arg`"), "{message}");
    assert!(message.contains("cameras[0]"), "{message}");
    assert!(message.contains(&format!("{CONFIG_PATH}:14:")), "{message}");
}

#[test]
fn rpicam_args_must_be_a_list_of_strings() {
    let message = error_message(&rpicam("rpicam_args = \"--hflip\""));
    assert!(message.contains("cameras[0].rpicam_args"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
    assert!(message.contains(&format!("{CONFIG_PATH}:14:15:")), "{message}");
}

#[test]
fn rpicam_rejects_keys_of_other_sources() {
    for (key, expected) in [
        ("pixel_format = \"YUYV\"", "pixel_format applies only to source = \"device\""),
        ("realtime = true", "realtime applies only to source = \"stream\""),
    ] {
        let message = error_message(&rpicam(key));
        assert!(message.contains(expected), "{key}: {message}");
        assert!(message.contains(&format!("{CONFIG_PATH}:10:")), "{key}: {message}");
    }
}

#[test]
fn rpicam_args_reject_width_option() {
    let message = error_message(&rpicam("rpicam_args = [\"--width\", \"800\"]"));
    assert_eq!(
        message,
        format!("{CONFIG_PATH}:14:15: cameras[0] (\"door\"): rpicam_args: \"--width\" is set from width and height")
    );
}

#[test]
fn default_config_leaves_rpicam_args_unset() {
    let file = ConfigFile::parse(Path::new("default.toml"), DEFAULT_CONFIG).expect("the default config parses");
    assert_eq!(file.cameras.get_ref()[0].get_ref().rpicam_args, None);
}
