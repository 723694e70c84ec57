//! Runs Debian's `ffmpeg` to make test frames and reference conversions.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs ffmpeg with `args`, feeding `input` on its standard input, and
/// returns its standard output. Panics with ffmpeg's messages when it fails.
pub fn ffmpeg(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .stdin(if input.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "starting ffmpeg: {error}: install the Debian package ffmpeg, or run tests/run.sh, which installs it"
            )
        });

    // Writing from another thread keeps ffmpeg from blocking on a full
    // stdout pipe while this thread is still writing its input.
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || stdin.write_all(&input))
    });
    let output = child.wait_with_output().expect("waiting for ffmpeg");
    if let Some(writer) = writer {
        writer.join().expect("ffmpeg input thread").expect("writing ffmpeg's input");
    }

    assert!(
        output.status.success(),
        "ffmpeg {} failed with {}:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
