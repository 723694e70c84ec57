//! The `edgedet` command line: argument parsing and one module per subcommand.
//! Each subcommand returns `anyhow::Result`; errors are printed once here with
//! their whole chain and mapped to the documented exit status.

mod bench;
mod cameras;
mod check;
mod config_cmd;
mod detect;
mod export;
mod quantize;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a configuration error (`EX_CONFIG` from sysexits.h), so
/// systemd's `RestartPreventExitStatus=78` stops restarting a misconfigured service.
pub const EXIT_CONFIG: u8 = 78;

/// Object detection on edge boards: YOLOv4-family models on the CPU, results over MQTT.
#[derive(Debug, Parser)]
#[command(name = "edgedet", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Detect objects in image files and print the results.
    Detect(detect::DetectArgs),
    /// Write a darknet model as ONNX, with its YOLO metadata.
    ExportOnnx(export::ExportArgs),
    /// Calibrate a darknet model on sample frames for int8 inference.
    Quantize(quantize::QuantizeArgs),
    /// Time edgedet's precisions and thread counts, and peer runtimes, on one model and image.
    Bench(bench::BenchArgs),
    /// Run the detection daemon: frame sources → model → MQTT.
    Run(run::RunArgs),
    /// Validate a config file without running anything.
    Check(check::CheckArgs),
    /// Print the commented default config.
    Config(config_cmd::ConfigArgs),
    /// List the V4L2 video devices, what they offer, and whether a `device` source can use each.
    Cameras(cameras::CamerasArgs),
}

/// An error that should end the program with [`EXIT_CONFIG`] instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// Whether stdout still has a reader after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdout {
    Open,
    /// The reader went away, as `head` does after its lines; stop writing, it is not an error.
    Closed,
}

/// Writes `text` to stdout and flushes it.
///
/// # Errors
/// Any write failure other than a closed pipe.
fn write_stdout(text: &str) -> std::io::Result<Stdout> {
    use std::io::Write;

    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Stdout::Open),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(Stdout::Closed),
        Err(error) => Err(error),
    }
}

/// Whether an error means the configuration or the installation must change
/// before a restart can help: an invalid config, model files that cannot be
/// loaded, or a program that a camera's source needs (ffmpeg, rpicam-vid)
/// that is not installed. Once running, the daemon returns no source errors.
fn is_configuration_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    let model_failed = cause
        .downcast_ref::<crate::daemon::DaemonError>()
        .is_some_and(|error| matches!(error, crate::daemon::DaemonError::Model { .. }));
    model_failed
        || cause.is::<ConfigProblem>()
        || cause.is::<crate::config::ConfigError>()
        || cause.is::<crate::frame_source::FrameSourceError>()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let result = match cli.command {
        Command::Detect(args) => detect::run(args),
        Command::ExportOnnx(args) => export::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Config(args) => config_cmd::run(args),
        Command::Cameras(args) => cameras::run(args),
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.chain().any(is_configuration_error) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
