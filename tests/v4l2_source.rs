//! The `device` source and `edgedet cameras` against scripted fake V4L2
//! devices, through the public seam `frame_source::v4l2::device`. No camera
//! is needed. Raw frames are made by Debian's ffmpeg from a fixture photo,
//! so ffmpeg must be in PATH (tests/run.sh installs it).

mod common;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ffmpeg::ffmpeg;
use common::mosquitto::Mosquitto;
use edgedet::config::FrameSize;
use edgedet::convert::{to_rgb, PixelFormat, RawFrame};
use edgedet::frame_source::v4l2::device::{
    ActiveFormat, Buffer, CaptureDevice, DequeueError, DeviceCaps, DeviceOpener, FormatDescription, Fraction,
    FrameIntervals, FrameSizes,
};
use edgedet::frame_source::v4l2::listing::{default_request, describe, find_nodes, format_report};
use edgedet::frame_source::v4l2::negotiate::{choose, probe, CaptureRequest};
use edgedet::frame_source::{DeviceOptions, DeviceSource, FrameSource, FrameSourceError, V4l2Error};
use edgedet::preprocess::RgbImage;

const WIDTH: u32 = 64;
const HEIGHT: u32 = 48;

// ---- fake device --------------------------------------------------------------

/// What the fake dequeue returns next.
#[derive(Clone, Debug)]
enum Event {
    Frame { data: Vec<u8>, bytes_used: u32, error_flag: bool },
    Gone,
    Again,
}

fn frame(data: Vec<u8>) -> Event {
    let bytes_used = u32::try_from(data.len()).unwrap();
    Event::Frame { data, bytes_used, error_flag: false }
}

/// One offered format with its discrete sizes, each at 30 and 15 fps.
fn offer(fourcc: &[u8; 4], sizes: &[(u32, u32)]) -> (FormatDescription, Vec<(u32, u32)>) {
    (FormatDescription { fourcc: *fourcc, description: String::from_utf8_lossy(fourcc).into_owned() }, sizes.to_vec())
}

/// Width, height and fourcc of one `set_format` request.
type FormatRequest = (u32, u32, [u8; 4]);

/// A scripted device, shared with the test through `Arc`s so that the test
/// can unplug it and see what the source requested.
#[derive(Clone)]
struct FakeCamera {
    caps: DeviceCaps,
    formats: Vec<(FormatDescription, Vec<(u32, u32)>)>,
    /// Fourcc, width, height and stride the driver sets; the request when `None`.
    reply: Option<ActiveFormat>,
    events: Arc<Mutex<VecDeque<Event>>>,
    plugged: Arc<Mutex<bool>>,
    requests: Arc<Mutex<Vec<FormatRequest>>>,
    opens: Arc<Mutex<u32>>,
}

fn uvc_caps() -> DeviceCaps {
    DeviceCaps {
        driver: "uvcvideo".into(),
        card: "Fake Webcam".into(),
        bus_info: "usb-0000:00:14.0-1".into(),
        video_capture: true,
        video_capture_mplane: false,
        meta_capture: false,
        streaming: true,
    }
}

impl FakeCamera {
    fn new(formats: Vec<(FormatDescription, Vec<(u32, u32)>)>) -> FakeCamera {
        FakeCamera {
            caps: uvc_caps(),
            formats,
            reply: None,
            events: Arc::default(),
            plugged: Arc::new(Mutex::new(true)),
            requests: Arc::default(),
            opens: Arc::default(),
        }
    }

    fn push(&self, event: Event) {
        self.events.lock().unwrap().push_back(event);
    }

    fn set_plugged(&self, plugged: bool) {
        *self.plugged.lock().unwrap() = plugged;
    }

    fn source(&self, options: DeviceOptions) -> DeviceSource {
        DeviceSource::with_opener(Path::new("/dev/video0"), options, Box::new(self.clone()))
    }
}

struct FakeDevice {
    camera: FakeCamera,
    current: Vec<u8>,
    streaming: bool,
}

impl DeviceOpener for FakeCamera {
    fn open(&mut self, _path: &Path) -> io::Result<Box<dyn CaptureDevice>> {
        if !*self.plugged.lock().unwrap() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        *self.opens.lock().unwrap() += 1;
        Ok(Box::new(FakeDevice { camera: self.clone(), current: Vec::new(), streaming: false }))
    }
}

impl CaptureDevice for FakeDevice {
    fn capabilities(&self) -> io::Result<DeviceCaps> {
        Ok(self.camera.caps.clone())
    }

    fn formats(&self) -> io::Result<Vec<FormatDescription>> {
        Ok(self.camera.formats.iter().map(|(description, _)| description.clone()).collect())
    }

    fn frame_sizes(&self, fourcc: [u8; 4]) -> io::Result<Vec<FrameSizes>> {
        let (_, sizes) = self.camera.formats.iter().find(|(description, _)| description.fourcc == fourcc).unwrap();
        Ok(sizes.iter().map(|&(width, height)| FrameSizes::Discrete { width, height }).collect())
    }

    fn frame_intervals(&self, _fourcc: [u8; 4], _width: u32, _height: u32) -> io::Result<Vec<FrameIntervals>> {
        Ok(vec![
            FrameIntervals::Discrete(Fraction { numerator: 1, denominator: 30 }),
            FrameIntervals::Discrete(Fraction { numerator: 1, denominator: 15 }),
        ])
    }

    fn set_format(&mut self, width: u32, height: u32, fourcc: [u8; 4]) -> io::Result<ActiveFormat> {
        self.camera.requests.lock().unwrap().push((width, height, fourcc));
        Ok(self.camera.reply.unwrap_or_else(|| {
            let format = PixelFormat::from_fourcc(fourcc).unwrap();
            let bytes_per_line = RawFrame::packed(format, width, height, &[]).bytes_per_line;
            ActiveFormat { width, height, fourcc, bytes_per_line, size_image: 0 }
        }))
    }

    fn set_frame_interval(&mut self, _interval: Fraction) -> io::Result<Fraction> {
        // As the Raspberry Pi's unicam does.
        Err(io::Error::from_raw_os_error(libc::ENOTTY))
    }

    fn start(&mut self) -> io::Result<()> {
        self.streaming = true;
        Ok(())
    }

    fn dequeue(&mut self, timeout: Duration) -> Result<Buffer<'_>, DequeueError> {
        assert!(self.streaming, "dequeue before start");
        let event = self.camera.events.lock().unwrap().pop_front();
        match event {
            Some(Event::Frame { data, bytes_used, error_flag }) => {
                self.current = data;
                Ok(Buffer { data: &self.current, bytes_used, error_flag, sequence: 0 })
            }
            Some(Event::Gone) => {
                self.camera.set_plugged(false);
                Err(DequeueError::Gone(io::Error::from_raw_os_error(libc::ENODEV)))
            }
            Some(Event::Again) => Err(DequeueError::Timeout(timeout)),
            None => {
                // Like a real camera between frames: wait for the next one
                // until the timeout passes.
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                    if !self.camera.events.lock().unwrap().is_empty() {
                        return self.dequeue(timeout);
                    }
                }
                Err(DequeueError::Timeout(timeout))
            }
        }
    }
}

// ---- frames from ffmpeg ---------------------------------------------------------

/// The bus photo scaled to WIDTH×HEIGHT as RGB24.
fn still() -> RgbImage {
    let photo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/bus.jpg");
    let size = format!("scale={WIDTH}:{HEIGHT}");
    let rgb =
        ffmpeg(&["-i", photo.to_str().unwrap(), "-vf", &size, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], &[]);
    RgbImage::from_raw(WIDTH, HEIGHT, rgb).expect("ffmpeg wrote one rgb24 frame")
}

/// The still as one raw frame in ffmpeg's `pix_fmt`.
fn raw_frame(still: &RgbImage, pix_fmt: &str) -> Vec<u8> {
    let size = format!("{WIDTH}x{HEIGHT}");
    ffmpeg(
        &[
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0", "-pix_fmt", pix_fmt, "-f", "rawvideo",
            "pipe:1",
        ],
        still.as_raw(),
    )
}

/// The still as one MJPEG frame, with the Huffman tables webcams leave out.
fn mjpeg_frame(still: &RgbImage) -> Vec<u8> {
    let size = format!("{WIDTH}x{HEIGHT}");
    #[rustfmt::skip]
    let args = [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-i", "pipe:0",
        "-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "2", "-f", "mjpeg", "pipe:1",
    ];
    ffmpeg(&args, still.as_raw())
}

fn mean_abs_error(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    total as f64 / a.as_raw().len() as f64
}

fn options(width: u32, height: u32) -> DeviceOptions {
    DeviceOptions { size: FrameSize::new(width, height), fps: None, pixel_format: None }
}

fn next_image(source: &mut DeviceSource) -> RgbImage {
    match source.next_frame() {
        Ok(Some(frame)) => frame.image,
        Ok(None) => panic!("the device source ended"),
        Err(error) => panic!("expected a frame, got: {error}"),
    }
}

fn device_error(result: Result<Option<edgedet::frame_source::Frame>, FrameSourceError>) -> V4l2Error {
    match result {
        Err(FrameSourceError::Device(error)) => error,
        Err(other) => panic!("expected a device error, got: {other}"),
        Ok(_) => panic!("expected a device error, got a frame"),
    }
}

// ---- negotiation ------------------------------------------------------------------

fn profile_of(camera: &FakeCamera) -> edgedet::frame_source::v4l2::negotiate::DeviceProfile {
    let device = camera.clone().open(Path::new("/dev/video0")).unwrap();
    probe(device.as_ref()).unwrap()
}

fn request(width: u32, height: u32) -> CaptureRequest {
    CaptureRequest { size: FrameSize::new(width, height).unwrap(), fps: Some(30.0), pixel_format: None }
}

#[test]
fn negotiation_prefers_raw_yuv_at_requested_size() {
    let camera =
        FakeCamera::new(vec![offer(b"MJPG", &[(640, 480), (1280, 720)]), offer(b"YUYV", &[(640, 480), (1280, 720)])]);
    let choice = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video0")).unwrap();
    assert_eq!(choice.format, PixelFormat::Yuyv);
    assert_eq!((choice.width, choice.height), (640, 480));
    assert_eq!(choice.interval, Some(Fraction { numerator: 1, denominator: 30 }));
}

#[test]
fn negotiation_falls_back_to_mjpeg() {
    // 1920x1080 is offered only as MJPEG, as on many USB 2 webcams.
    let camera =
        FakeCamera::new(vec![offer(b"YUYV", &[(640, 480), (1280, 720)]), offer(b"MJPG", &[(640, 480), (1920, 1080)])]);
    let choice = choose(&profile_of(&camera), &request(1920, 1080), Path::new("/dev/video0")).unwrap();
    assert_eq!(choice.format, PixelFormat::Mjpeg);
    assert_eq!(choice.fourcc, *b"MJPG");
    assert_eq!((choice.width, choice.height), (1920, 1080));
}

#[test]
fn negotiation_takes_nearest_larger_size() {
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(320, 240), (800, 600), (1280, 720)])]);
    let choice = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video0")).unwrap();
    assert_eq!(choice.format, PixelFormat::Yuyv);
    assert_eq!((choice.width, choice.height), (800, 600));
}

#[test]
fn negotiation_prefers_nv12_over_yuyv() {
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(640, 480)]), offer(b"NV12", &[(640, 480)])]);
    let choice = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video0")).unwrap();
    assert_eq!(choice.format, PixelFormat::Nv12);
}

#[test]
fn forced_format_present_is_used() {
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(640, 480)]), offer(b"MJPG", &[(640, 480)])]);
    let forced = CaptureRequest { pixel_format: Some(PixelFormat::Mjpeg), ..request(640, 480) };
    let choice = choose(&profile_of(&camera), &forced, Path::new("/dev/video0")).unwrap();
    assert_eq!(choice.format, PixelFormat::Mjpeg);
}

#[test]
fn forced_format_absent_names_offered() {
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(640, 480)]), offer(b"MJPG", &[(640, 480)])]);
    let forced = CaptureRequest { pixel_format: Some(PixelFormat::Nv12), ..request(640, 480) };
    let error = choose(&profile_of(&camera), &forced, Path::new("/dev/video0")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/dev/video0 does not offer pixel_format NV12 (offered: YUYV, MJPG): remove pixel_format or pick an offered one"
    );
}

#[test]
fn bayer_only_device_rejected_with_advice() {
    let mut camera = FakeCamera::new(vec![offer(b"pRAA", &[(1640, 1232)]), offer(b"RG10", &[(1640, 1232)])]);
    camera.caps.driver = "unicam".into();
    camera.caps.card = "unicam".into();
    let error = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video0")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, V4l2Error::BayerOnly { .. }), "{message}");
    assert!(
        message.starts_with("/dev/video0 (unicam, driver unicam) offers only raw Bayer formats (pRAA, RG10)"),
        "{message}"
    );
    assert!(message.contains("rpicam-vid"), "{message}");
    assert!(message.contains("source = \"rpicam\""), "{message}");
    assert!(message.contains("USB (UVC) camera"), "{message}");
}

#[test]
fn multi_planar_only_device_is_rejected() {
    let mut camera = FakeCamera::new(vec![]);
    camera.caps.video_capture = false;
    camera.caps.video_capture_mplane = true;
    camera.caps.card = "vi-output".into();
    let error = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video0")).unwrap_err();
    assert!(matches!(error, V4l2Error::MultiPlanarOnly { .. }), "{error}");
    assert!(error.to_string().starts_with("/dev/video0 (vi-output) supports only multi-planar capture"), "{error}");
}

#[test]
fn metadata_node_is_not_capture() {
    let mut camera = FakeCamera::new(vec![]);
    camera.caps.video_capture = false;
    camera.caps.meta_capture = true;
    let error = choose(&profile_of(&camera), &request(640, 480), Path::new("/dev/video1")).unwrap_err();
    assert!(matches!(error, V4l2Error::NotCapture { .. }), "{error}");
    assert!(error.to_string().starts_with("/dev/video1 (Fake Webcam) is a metadata node"), "{error}");
}

// ---- the source ---------------------------------------------------------------------

#[test]
fn yuyv_frames_convert_to_the_photo() {
    let still = still();
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.push(frame(raw_frame(&still, "yuyv422")));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let image = next_image(&mut source);
    let error = mean_abs_error(&image, &still);
    assert!(error < 6.0, "mean absolute error of YUYV against the still: {error}");
    assert_eq!(source.active_format().unwrap().fourcc, *b"YUYV");
    assert_eq!(source.timeout(), Some(Duration::from_secs(2)));
}

#[test]
fn nv12_frames_convert_to_the_photo() {
    let still = still();
    let camera = FakeCamera::new(vec![offer(b"NV12", &[(WIDTH, HEIGHT)])]);
    camera.push(frame(raw_frame(&still, "nv12")));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let error = mean_abs_error(&next_image(&mut source), &still);
    assert!(error < 6.0, "mean absolute error of NV12 against the still: {error}");
}

#[test]
fn padded_rows_are_walked_by_stride() {
    let still = still();
    let packed = raw_frame(&still, "yuyv422");
    let row = (WIDTH * 2) as usize;
    let stride = row + 32;
    // Padding bytes of 0xEE would show up as a coloured band if read as pixels.
    let mut padded = Vec::new();
    for line in packed.chunks(row) {
        padded.extend_from_slice(line);
        padded.extend(std::iter::repeat_n(0xEE, stride - row));
    }

    let mut camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.reply = Some(ActiveFormat {
        width: WIDTH,
        height: HEIGHT,
        fourcc: *b"YUYV",
        bytes_per_line: stride as u32,
        size_image: (stride * HEIGHT as usize) as u32,
    });
    camera.push(frame(padded));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let expected = to_rgb(&RawFrame::packed(PixelFormat::Yuyv, WIDTH, HEIGHT, &packed)).unwrap();
    assert_eq!(next_image(&mut source), expected);
}

#[test]
fn bytes_used_limits_the_frame() {
    // A buffer larger than the frame, as mmap buffers are for MJPEG; the
    // bytes after bytes_used are garbage that must not reach the decoder.
    let still = still();
    let jpeg = mjpeg_frame(&still);
    let bytes_used = jpeg.len() as u32;
    let mut data = jpeg.clone();
    data.extend(std::iter::repeat_n(0xFF, 4096));

    let camera = FakeCamera::new(vec![offer(b"MJPG", &[(WIDTH, HEIGHT)])]);
    camera.push(Event::Frame { data, bytes_used, error_flag: false });
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let image = next_image(&mut source);
    let expected = to_rgb(&RawFrame::packed(PixelFormat::Mjpeg, WIDTH, HEIGHT, &jpeg)).unwrap();
    assert_eq!(image, expected);
    let error = mean_abs_error(&image, &still);
    assert!(error < 8.0, "mean absolute error of MJPEG against the still: {error}");
}

#[test]
fn driver_reply_jpeg_smaller_size_used() {
    // Asked for MJPG at 64x48, the driver sets JPEG at 32x24.
    let still = still();
    let small = RgbImage::from_fn(32, 24, |x, y| *still.get_pixel(x * 2, y * 2));
    let size = "32x24";
    #[rustfmt::skip]
    let jpeg = ffmpeg(&[
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-i", "pipe:0",
        "-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "2", "-f", "mjpeg", "pipe:1",
    ], small.as_raw());

    let mut camera = FakeCamera::new(vec![offer(b"MJPG", &[(WIDTH, HEIGHT)])]);
    camera.reply = Some(ActiveFormat { width: 32, height: 24, fourcc: *b"JPEG", bytes_per_line: 0, size_image: 65536 });
    camera.push(frame(jpeg));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let image = next_image(&mut source);
    assert_eq!(image.dimensions(), (32, 24));
    let error = mean_abs_error(&image, &small);
    assert!(error < 8.0, "mean absolute error of the 32x24 JPEG against its still: {error}");
    assert_eq!(camera.requests.lock().unwrap().as_slice(), &[(WIDTH, HEIGHT, *b"MJPG")]);
}

#[test]
fn corrupt_and_empty_buffers_skipped() {
    let still = still();
    let yuyv = raw_frame(&still, "yuyv422");
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.push(Event::Frame { data: yuyv.clone(), bytes_used: yuyv.len() as u32, error_flag: true });
    camera.push(Event::Frame { data: yuyv.clone(), bytes_used: 0, error_flag: false });
    camera.push(Event::Frame { data: b"not a frame".to_vec(), bytes_used: 11, error_flag: false });
    camera.push(frame(yuyv));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let corrupt = source.next_frame().unwrap_err();
    assert!(corrupt.is_skipped_frame(), "{corrupt}");
    assert_eq!(corrupt.to_string(), "skipping frame 0 of /dev/video0: the driver flagged the buffer as corrupt");
    let empty = source.next_frame().unwrap_err();
    assert!(empty.is_skipped_frame(), "{empty}");
    assert_eq!(empty.to_string(), "skipping frame 1 of /dev/video0: the buffer is empty");
    let short = source.next_frame().unwrap_err();
    assert!(short.is_skipped_frame(), "{short}");
    assert_eq!(source.skipped_frames(), 3);

    let frame = source.next_frame().unwrap().unwrap();
    assert_eq!(frame.sequence, 3, "skipped buffers use up their sequence numbers");
    assert_eq!(frame.name, "video0");
    assert_eq!(*camera.opens.lock().unwrap(), 1, "skipping a buffer does not reopen the device");
}

#[test]
fn malformed_mjpeg_is_skipped() {
    let camera = FakeCamera::new(vec![offer(b"MJPG", &[(WIDTH, HEIGHT)])]);
    camera.push(frame(vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00]));
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let error = source.next_frame().unwrap_err();
    assert!(error.is_skipped_frame(), "{error}");
    assert_eq!(source.skipped_frames(), 1);
}

#[test]
fn unplugged_device_reconnects() {
    let still = still();
    let yuyv = raw_frame(&still, "yuyv422");
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.push(frame(yuyv.clone()));
    camera.push(Event::Gone);
    let mut source = camera.source(options(WIDTH, HEIGHT));

    next_image(&mut source);
    let gone = device_error(source.next_frame());
    assert!(matches!(gone, V4l2Error::Gone { .. }), "{gone}");
    assert!(gone.is_transient());

    // Still unplugged: opening fails, and the worker keeps retrying.
    let missing = device_error(source.next_frame());
    assert!(matches!(missing, V4l2Error::Open { .. }), "{missing}");
    assert_eq!(missing.to_string(), "opening /dev/video0");
    assert!(missing.is_transient());

    camera.set_plugged(true);
    camera.push(frame(yuyv));
    let image = next_image(&mut source);
    assert!(mean_abs_error(&image, &still) < 6.0);
    assert_eq!(*camera.opens.lock().unwrap(), 2);
}

#[test]
fn camera_missing_at_start_is_transient() {
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.set_plugged(false);
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let error = source.next_frame().unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!error.is_skipped_frame(), "{error}");
    assert!(source.is_looping(), "a device source is retried, never ended");
}

#[test]
fn timeout_marks_unavailable_and_reopens() {
    let still = still();
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);
    camera.push(Event::Again);
    let mut source = camera.source(options(WIDTH, HEIGHT));

    let timeout = device_error(source.next_frame());
    assert_eq!(timeout.to_string(), "/dev/video0 delivered no frame within 2000 ms");
    assert!(timeout.is_transient());

    camera.push(frame(raw_frame(&still, "yuyv422")));
    next_image(&mut source);
    assert_eq!(*camera.opens.lock().unwrap(), 2, "the device is opened again after a timeout");
}

// ---- edgedet cameras -------------------------------------------------------------

#[test]
fn camera_list_shows_formats_and_verdicts() {
    let webcam = FakeCamera::new(vec![offer(b"YUYV", &[(640, 480)]), offer(b"MJPG", &[(640, 480), (1280, 720)])]);
    let mut metadata = FakeCamera::new(vec![]);
    metadata.caps.video_capture = false;
    metadata.caps.meta_capture = true;

    struct Devices(Vec<FakeCamera>);
    impl DeviceOpener for Devices {
        fn open(&mut self, path: &Path) -> io::Result<Box<dyn CaptureDevice>> {
            let index: usize = path.to_string_lossy().trim_start_matches("/dev/video").parse().unwrap();
            self.0[index].open(path)
        }
    }
    let nodes = vec![
        (PathBuf::from("/dev/video0"), vec![PathBuf::from("/dev/v4l/by-id/usb-Fake_Webcam-video-index0")]),
        (PathBuf::from("/dev/video1"), vec![]),
    ];
    let entries = describe(nodes, &mut Devices(vec![webcam, metadata]));
    let report = format_report(&entries, &default_request(), Path::new("/dev"));

    assert_eq!(
        report,
        "/dev/video0\n\
         \x20 also /dev/v4l/by-id/usb-Fake_Webcam-video-index0\n\
         \x20 driver uvcvideo, card \"Fake Webcam\", bus usb-0000:00:14.0-1\n\
         \x20 YUYV (YUYV): 640x480 at 30/15 fps\n\
         \x20 MJPG (MJPG): 640x480 at 30/15 fps, 1280x720 at 30/15 fps\n\
         \x20 usable: edgedet would capture YUYV at 640x480\n\
         \n\
         /dev/video1\n\
         \x20 driver uvcvideo, card \"Fake Webcam\", bus usb-0000:00:14.0-1\n\
         \x20 not usable: /dev/video1 (Fake Webcam) is a metadata node: set path to the camera's video capture node (`edgedet cameras` lists them)\n"
    );
}

#[test]
fn stable_names_point_at_their_node() {
    let dev = tempfile::tempdir().unwrap();
    for node in ["video0", "video1", "video10", "videodev"] {
        std::fs::write(dev.path().join(node), b"").unwrap();
    }
    std::fs::create_dir_all(dev.path().join("v4l/by-id")).unwrap();
    std::fs::create_dir_all(dev.path().join("v4l/by-path")).unwrap();
    std::os::unix::fs::symlink("../../video1", dev.path().join("v4l/by-id/usb-Fake_Webcam-video-index0")).unwrap();
    std::os::unix::fs::symlink(
        "../../video1",
        dev.path().join("v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0"),
    )
    .unwrap();

    let nodes = find_nodes(dev.path());
    let names: Vec<PathBuf> = nodes.iter().map(|(node, _)| node.clone()).collect();
    assert_eq!(names, ["video0", "video1", "video10"].map(|node| dev.path().join(node)));
    assert_eq!(nodes[0].1, Vec::<PathBuf>::new());
    assert_eq!(
        nodes[1].1,
        vec![
            dev.path().join("v4l/by-id/usb-Fake_Webcam-video-index0"),
            dev.path().join("v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0"),
        ]
    );
}

#[test]
fn camera_list_without_devices_says_so() {
    let report = format_report(&[], &default_request(), Path::new("/dev"));
    assert_eq!(report, "no V4L2 video devices found: /dev has no video* nodes\n");
}

#[test]
fn cameras_command_without_devices_exits_zero() {
    let dev = tempfile::tempdir().unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_edgedet")).arg("cameras").arg("--dev").arg(dev.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("no V4L2 video devices found: {} has no video* nodes\n", dev.path().display())
    );
}

#[test]
fn cameras_command_reports_unreadable_node() {
    // A regular file named video0 opens, but fails VIDIOC_QUERYCAP.
    let dev = tempfile::tempdir().unwrap();
    std::fs::write(dev.path().join("video0"), b"").unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_edgedet")).arg("cameras").arg("--dev").arg(dev.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(&format!("{}\n  not usable: querying failed:", dev.path().join("video0").display())),
        "{stdout}"
    );
}

// ---- the daemon --------------------------------------------------------------------

/// Writes a config whose only camera is a `device` source at `device_path`.
fn write_device_config(dir: &Path, port: u16, device_path: &Path) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/yolov4-tiny/yolov4-tiny.cfg");
    let config = format!(
        "[device]\nid = \"testdev\"\n\n[model]\npath = {model:?}\n\n[mqtt]\nport = {port}\n\n\
         [[cameras]]\nname = \"porch\"\nsource = \"device\"\npath = {device:?}\nwidth = 640\nheight = 480\n",
        model = model.display().to_string(),
        device = device_path.display().to_string(),
    );
    let path = dir.join("edgedet.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn check_accepts_unplugged_device() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("video99");
    let config = write_device_config(dir.path(), 1883, &device);

    let output =
        Command::new(env!("CARGO_BIN_EXE_edgedet")).arg("check").arg("--config").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "edgedet check failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("camera porch: device {}", device.display())), "{stdout}");
}

#[test]
fn daemon_keeps_missing_device_offline() {
    let broker = Mosquitto::start();
    let mut live = common::mosquitto::Subscriber::connect(broker.port(), &["edgedet/#"]);
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("video99");
    let config = write_device_config(dir.path(), broker.port(), &device);

    let log_path = dir.path().join("edgedet.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_edgedet"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "edgedet=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let offline = live.wait_for(Duration::from_secs(120), |message| {
        message.topic == "edgedet/testdev/porch/status" && message.text() == "offline"
    });
    // The first retry comes 1 s after the failure; wait for it to fail as well.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log().contains("attempt 1 failed") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let still_running = daemon.try_wait().unwrap().is_none();
    let _ = daemon.kill();
    let _ = daemon.wait();

    let log = log();
    assert!(offline.is_some(), "the camera did not go offline; log:\n{log}");
    assert!(still_running, "the daemon exited on a missing device; log:\n{log}");
    assert!(log.contains(&format!("opening {}", device.display())), "{log}");
    assert!(log.contains("offline, trying again in 1000 ms"), "{log}");
    assert!(log.contains("attempt 1 failed"), "{log}");
}

/// Texts of the status messages of camera `porch` received so far.
fn porch_statuses(live: &common::mosquitto::Subscriber) -> Vec<String> {
    live.messages.iter().filter(|message| message.topic == "edgedet/testdev/porch/status").map(|m| m.text()).collect()
}

/// Waits until `count` status messages of camera `porch` have arrived.
fn wait_for_statuses(live: &mut common::mosquitto::Subscriber, count: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    while porch_statuses(live).len() < count && Instant::now() < deadline {
        live.wait_for(Duration::from_millis(100), |_| false);
    }
    porch_statuses(live)
}

fn detections_count(live: &common::mosquitto::Subscriber) -> usize {
    live.messages.iter().filter(|message| message.topic == "edgedet/testdev/porch/detections").count()
}

#[test]
fn unplugged_camera_goes_offline_then_online() {
    let broker = Mosquitto::start();
    let mut live = common::mosquitto::Subscriber::connect(broker.port(), &["edgedet/#"]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_device_config(dir.path(), broker.port(), Path::new("/dev/video0"));
    let config = edgedet::config::Config::load(&config_path).unwrap();

    let yuyv = raw_frame(&still(), "yuyv422");
    let camera = FakeCamera::new(vec![offer(b"YUYV", &[(WIDTH, HEIGHT)])]);

    let control = edgedet::daemon::Control::default();
    let daemon = {
        let (camera, control) = (camera.clone(), control.clone());
        std::thread::spawn(move || {
            let open_source = move |_: &edgedet::config::CameraConfig| -> Box<dyn FrameSource> {
                Box::new(camera.source(options(WIDTH, HEIGHT)))
            };
            let options = edgedet::daemon::RunOptions { echo: edgedet::daemon::Echo::Off, exit_when_done: false };
            edgedet::daemon::run_with_sources(config, options, &control, &open_source)
        })
    };

    // The status goes out once the MQTT connection is up; frames are held
    // back until then, as a status replaced before the connection is never
    // published.
    let statuses = wait_for_statuses(&mut live, 1, Duration::from_secs(120));
    assert_eq!(statuses, ["online"], "{}", live.summary());

    // Three frames, then the device is unplugged.
    for _ in 0..3 {
        camera.push(frame(yuyv.clone()));
    }
    camera.push(Event::Gone);
    let statuses = wait_for_statuses(&mut live, 2, Duration::from_secs(120));
    assert_eq!(statuses, ["online", "offline"], "{}", live.summary());
    // Inference runs on its own thread, so the last frame's detections may
    // follow the offline status.
    let deadline = Instant::now() + Duration::from_secs(30);
    while detections_count(&live) == 0 && Instant::now() < deadline {
        live.wait_for(Duration::from_millis(100), |_| false);
    }
    let before = detections_count(&live);
    assert!(before >= 1, "no detections before the unplug:\n{}", live.summary());

    // Plugged in again: the next retry opens it and frames flow.
    camera.set_plugged(true);
    for _ in 0..3 {
        camera.push(frame(yuyv.clone()));
    }
    let statuses = wait_for_statuses(&mut live, 3, Duration::from_secs(30));
    assert_eq!(statuses, ["online", "offline", "online"], "{}", live.summary());
    let deadline = Instant::now() + Duration::from_secs(30);
    while detections_count(&live) <= before && Instant::now() < deadline {
        live.wait_for(Duration::from_millis(100), |_| false);
    }

    control.shutdown.trigger();
    daemon.join().unwrap().unwrap();
    let statuses = wait_for_statuses(&mut live, 4, Duration::from_secs(10));
    assert_eq!(statuses, ["online", "offline", "online", "offline"], "{}", live.summary());
    let returned = live
        .messages
        .iter()
        .enumerate()
        .filter(|(_, message)| message.topic == "edgedet/testdev/porch/status" && message.text() == "online")
        .nth(1)
        .map(|(index, _)| index)
        .unwrap();
    assert!(
        live.messages[returned..].iter().any(|message| message.topic == "edgedet/testdev/porch/detections"),
        "no detections after the camera returned:\n{}",
        live.summary()
    );

    // The last stats message, published after the camera stopped.
    let stats = live
        .wait_for_topic(Duration::from_secs(10), "edgedet/testdev/stats")
        .unwrap_or_else(|| panic!("no stats message:\n{}", live.summary()))
        .json();
    let porch = &stats["cameras"]["porch"];
    assert_eq!(porch["frames_captured"], 6, "{stats}");
    let processed = porch["frames_processed"].as_u64().unwrap();
    let skipped = porch["frames_skipped"].as_u64().unwrap();
    assert_eq!(processed + skipped, 6, "every captured frame is processed or skipped: {stats}");
    assert_eq!(processed as usize, detections_count(&live), "one detections message per processed frame: {stats}");
    assert_eq!(*camera.opens.lock().unwrap(), 2);
}
