//! Child processes that write raw frames to their stdout: `ffmpeg` for the
//! `stream` source and `rpicam-vid` for the `rpicam` source.
//!
//! [`FrameProcess`] owns one running child with stdin closed and stdout and
//! stderr piped. A thread of its own reads stderr, so that a child that
//! writes much to stderr does not block on a full pipe, and keeps the last
//! lines for error messages.
//! Dropping a [`FrameProcess`] kills and reaps the child. This module knows
//! nothing about frame formats or about what a child's exit means.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::debug;

/// Number of stderr lines kept for error messages. Older lines are dropped.
const STDERR_LINES_KEPT: usize = 4;
/// Maximum length of a kept stderr line, in bytes. The rest of a longer line is cut off.
const STDERR_LINE_MAX: usize = 400;
/// Interval at which [`FrameProcess::wait_or_kill`] checks whether the child has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Maximum wait for the end of stderr once the child has exited. A process
/// that the child started and that outlived it may hold stderr open; the
/// reading thread is then left to finish on its own.
const STDERR_END_TIMEOUT: Duration = Duration::from_secs(1);

/// Display settings for the stderr lines of a child.
#[derive(Clone, Debug)]
pub(super) struct StderrOptions {
    /// Prefix of the debug log lines, such as `ffmpeg on /videos/yard.mp4`.
    pub label: String,
    /// Text replaced by `***` in every line, such as the password of a URL.
    pub secret: Option<String>,
    /// Number of lines logged at debug level; later lines are only kept.
    /// A child that writes a line per frame would otherwise flood the log.
    pub logged_lines: usize,
}

/// A running child process whose stdout carries frames. Dropping it kills and reaps the process.
pub(super) struct FrameProcess {
    child: Child,
    stdout: ChildStdout,
    stderr_tail: StderrTail,
    stopped: bool,
}

impl FrameProcess {
    /// Starts `command` with stdin closed and stdout and stderr piped.
    ///
    /// # Errors
    /// The error of [`Command::spawn`], such as `NotFound` for a missing program.
    pub fn spawn(command: &mut Command, stderr: StderrOptions) -> io::Result<FrameProcess> {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;

        // Both pipes were requested above, so both are present.
        let (Some(stdout), Some(stderr_pipe)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the child's output pipes are missing"));
        };
        let stderr_tail = StderrTail::start(stderr_pipe, stderr);
        Ok(FrameProcess { child, stdout, stderr_tail, stopped: false })
    }

    /// Returns the process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Returns the read end of the child's stdout.
    pub fn stdout(&mut self) -> &mut ChildStdout {
        &mut self.stdout
    }

    /// Waits for the child to exit, then for its stderr to be read to the end.
    ///
    /// # Errors
    /// The error of [`Child::wait`].
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait();
        self.stderr_tail.join();
        self.stopped = true;
        status
    }

    /// Waits up to `grace` for the child to exit, then kills it, and reaps it
    /// either way. A child that closed its stdout is normally exiting, but
    /// one that hangs in its shutdown must not hang the caller.
    ///
    /// # Errors
    /// The error of [`Child::try_wait`] or [`Child::wait`].
    pub fn wait_or_kill(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                self.stderr_tail.join();
                self.stopped = true;
                return Ok(status);
            }
            std::thread::sleep(EXIT_POLL);
        }
        self.stop();
        self.child.wait()
    }

    /// Kills the child, reaps it and reads its stderr to the end.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        // Killing a process that has already exited fails harmlessly; wait
        // reaps it either way, so no zombie is left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr_tail.join();
        self.stopped = true;
    }

    /// Returns the last non-empty stderr line read so far.
    pub fn last_stderr_line(&self) -> Option<String> {
        self.stderr_tail.last_line()
    }
}

impl Drop for FrameProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a child's stderr, read on a thread of their own.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
    /// Disconnects when the reading thread ends.
    finished: Receiver<()>,
}

impl StderrTail {
    fn start(stderr: impl Read + Send + 'static, options: StderrOptions) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES_KEPT)));
        let kept = Arc::clone(&lines);
        let thread_name = format!("{}-stderr", options.label.split(' ').next().unwrap_or("child"));
        let (finishing, finished) = mpsc::channel::<()>();
        let reader = std::thread::Builder::new().name(thread_name).spawn(move || {
            // Dropped when the thread ends, which disconnects `finished`.
            let _finishing = finishing;
            let StderrOptions { label, secret, logged_lines } = options;
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            let mut logged = 0;
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&raw);
                let line = hide_secret(text.trim_end(), secret.as_deref());
                if line.is_empty() {
                    continue;
                }
                if logged < logged_lines {
                    debug!("{label}: {line}");
                    logged += 1;
                }
                let mut lines = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.len() == STDERR_LINES_KEPT {
                    lines.pop_front();
                }
                lines.push_back(truncate(line, STDERR_LINE_MAX));
            }
        });
        // Without the thread, stderr is dropped, and error messages only lack
        // the child's explanation.
        StderrTail { lines, reader: reader.ok(), finished }
    }

    /// Waits up to [`STDERR_END_TIMEOUT`] for the thread to read stderr to its
    /// end, and leaves it running after that.
    fn join(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        match self.finished.recv_timeout(STDERR_END_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                let _ = reader.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                debug!("stderr of a finished child is still open, probably held by a process it started");
            }
        }
    }

    fn last_line(&self) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        last_line(lines.iter().map(String::as_str))
    }
}

/// Returns the last line that is not blank, trimmed.
pub(super) fn last_line<'a>(lines: impl DoubleEndedIterator<Item = &'a str>) -> Option<String> {
    lines.map(str::trim).rev().find(|line| !line.is_empty()).map(str::to_string)
}

fn truncate(mut line: String, max: usize) -> String {
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

/// Replaces every occurrence of `secret` in `text` by `***`.
pub(super) fn hide_secret(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => text.replace(secret, "***"),
        None => text.to_string(),
    }
}

/// Returns the path that running `program` would execute: `program` itself
/// when it contains a `/`, otherwise the first executable file of that name
/// in the folders of `PATH`.
pub(super) fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;

    let is_executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|folder| folder.join(program)).find(|candidate| is_executable(candidate))
}

/// Reads until `buffer` is full or the reader ends, and returns the number of
/// bytes read: less than `buffer.len()` only at the end of the stream.
pub(super) fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// How far [`read_full_within`] filled its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filled {
    Complete,
    /// The stream ended after this many bytes.
    Ended(usize),
    /// The time ran out after this many bytes.
    TimedOut(usize),
}

/// Reads until `buffer` is full, the pipe ends, or `timeout` has passed
/// since the call, whichever comes first. `reader` must be a blocking pipe
/// or socket: `poll(2)` tells when a read would not block.
///
/// # Errors
/// A failed `poll` or `read`, other than one interrupted by a signal.
pub(super) fn read_full_within(
    reader: &mut (impl Read + AsRawFd),
    buffer: &mut [u8],
    timeout: Duration,
) -> io::Result<Filled> {
    let deadline = Instant::now() + timeout;
    let mut filled = 0;
    while filled < buffer.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || !wait_readable(reader.as_raw_fd(), remaining)? {
            return Ok(Filled::TimedOut(filled));
        }
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(Filled::Ended(filled)),
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Filled::Complete)
}

/// Waits up to `timeout` until `fd` has data or has been closed at the other
/// end. Returns false when the time ran out first.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<bool> {
    // poll takes whole milliseconds; rounding up keeps a short remainder from
    // becoming a busy loop of zero timeouts.
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: `poll_fd` is one valid pollfd, and the count passed is 1.
        let ready = unsafe { libc::poll(&mut poll_fd, 1, millis) };
        if ready >= 0 {
            return Ok(ready > 0);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_stderr_line_is_cut_at_char_boundary() {
        assert_eq!(truncate("éé".to_string(), 3), "é...");
        assert_eq!(truncate("short".to_string(), 10), "short");
    }

    fn shell(script: &str) -> FrameProcess {
        let options = StderrOptions { label: "sh test".to_string(), secret: Some("s3cret".into()), logged_lines: 0 };
        FrameProcess::spawn(Command::new("sh").args(["-c", script]), options).expect("starting sh")
    }

    #[test]
    fn read_within_times_out_on_a_silent_child() {
        let mut process = shell("printf abc; exec sleep 30");
        let mut buffer = [0_u8; 8];
        let started = Instant::now();
        let filled = read_full_within(process.stdout(), &mut buffer, Duration::from_millis(200)).expect("reading");
        assert_eq!(filled, Filled::TimedOut(3));
        assert_eq!(&buffer[..3], b"abc");
        assert!(started.elapsed() >= Duration::from_millis(200), "returned after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "returned after {:?}", started.elapsed());
    }

    #[test]
    fn read_within_reports_the_end_of_output() {
        let mut process = shell("printf abcde");
        let mut buffer = [0_u8; 8];
        let filled = read_full_within(process.stdout(), &mut buffer, Duration::from_secs(10)).expect("reading");
        assert_eq!(filled, Filled::Ended(5));
        let mut complete = [0_u8; 3];
        let mut process = shell("printf abcde");
        let filled = read_full_within(process.stdout(), &mut complete, Duration::from_secs(10)).expect("reading");
        assert_eq!(filled, Filled::Complete);
        assert_eq!(&complete, b"abc");
    }

    #[test]
    fn exit_status_and_last_stderr_line_are_kept() {
        let mut process = shell("echo first >&2; echo 'password s3cret rejected' >&2; exit 3");
        let status = process.wait_or_kill(Duration::from_secs(10)).expect("waiting");
        assert_eq!(status.code(), Some(3));
        assert_eq!(process.last_stderr_line().as_deref(), Some("password *** rejected"));
    }

    #[test]
    fn stop_returns_while_a_grandchild_holds_the_pipes() {
        // The shell's `cat` outlives the kill, blocked on the full stdout
        // pipe, and keeps stderr open until the pipe closes.
        let mut process = shell("while true; do cat /dev/zero; done");
        let mut buffer = [0_u8; 4];
        read_full_within(process.stdout(), &mut buffer, Duration::from_secs(10)).expect("reading");
        let started = Instant::now();
        drop(process);
        assert!(started.elapsed() < STDERR_END_TIMEOUT + Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn hanging_child_is_killed_after_grace() {
        let mut process = shell("exec sleep 30");
        let status = process.wait_or_kill(Duration::from_millis(100)).expect("waiting");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
