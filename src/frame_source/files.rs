//! Frame sources backed by image files: one file, or the JPEG and PNG files of a folder.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{Frame, FrameSource, FrameSourceError};
use crate::preprocess::load_image;

/// File name extensions, compared without case, of the files a folder source reads.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Lists the JPEG and PNG files directly inside `folder`, sorted by file
/// name. Hidden files (names starting with `.`) and subfolders are left out.
///
/// # Errors
/// The I/O error of listing the folder.
pub fn list_images(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && has_image_extension(&path) && entry.file_type()?.is_file() {
            images.push(path);
        }
    }
    images.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(images)
}

fn has_image_extension(path: &Path) -> bool {
    let extension = path.extension().and_then(OsStr::to_str).unwrap_or("");
    IMAGE_EXTENSIONS.iter().any(|known| extension.eq_ignore_ascii_case(known))
}

/// A file's identity for the list of files that failed: when the file is
/// rewritten, its modification time or length changes and it is tried again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    /// `None` when the file's metadata cannot be read; reading the file then
    /// fails with a clearer error.
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp { path: path.to_path_buf(), modified: metadata.modified().ok(), len: metadata.len() })
    }
}

#[derive(Clone, Debug)]
enum Files {
    /// One image file, read again on every pass so that a file that another
    /// program rewrites is picked up.
    Image(PathBuf),
    /// A folder, listed again at the start of every pass.
    Folder(PathBuf),
}

/// A source that reads image files in passes: a pass is the image file once,
/// or every image in the folder once in name order.
///
/// A file that fails to decode is returned once as
/// [`FrameSourceError::Skipped`] and then left out of later passes until it
/// changes, so a looping source reports each broken file once. A pass that
/// yields no frame ends with [`FrameSourceError::Empty`] in a looping source,
/// so the caller can wait instead of spinning.
#[derive(Debug)]
pub struct FileSource {
    files: Files,
    looping: bool,
    queue: VecDeque<PathBuf>,
    passes: u64,
    frames_in_pass: u64,
    failures_in_pass: u64,
    /// Set after a pass without frames has been reported as `Empty`.
    reported_empty_pass: bool,
    failed: HashSet<FileStamp>,
    next_sequence: u64,
}

impl FileSource {
    pub fn image(path: PathBuf, looping: bool) -> FileSource {
        FileSource::new(Files::Image(path), looping)
    }

    pub fn folder(path: PathBuf, looping: bool) -> FileSource {
        FileSource::new(Files::Folder(path), looping)
    }

    fn new(files: Files, looping: bool) -> FileSource {
        FileSource {
            files,
            looping,
            queue: VecDeque::new(),
            passes: 0,
            frames_in_pass: 0,
            failures_in_pass: 0,
            reported_empty_pass: false,
            failed: HashSet::new(),
            next_sequence: 0,
        }
    }

    fn path(&self) -> &Path {
        match &self.files {
            Files::Image(path) | Files::Folder(path) => path,
        }
    }

    fn start_pass(&mut self) -> Result<(), FrameSourceError> {
        let paths = match &self.files {
            Files::Image(path) => vec![path.clone()],
            Files::Folder(folder) => {
                list_images(folder).map_err(|source| FrameSourceError::List { path: folder.clone(), source })?
            }
        };
        self.queue = paths.into();
        self.passes += 1;
        self.frames_in_pass = 0;
        self.failures_in_pass = 0;
        self.reported_empty_pass = false;
        Ok(())
    }

    /// Reads one file; `Ok(None)` for a file that failed before and has not changed.
    fn read(&mut self, path: &Path) -> Result<Option<Frame>, FrameSourceError> {
        let stamp = FileStamp::of(path);
        if stamp.as_ref().is_some_and(|stamp| self.failed.contains(stamp)) {
            return Ok(None);
        }

        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();

        let captured_at = SystemTime::now();
        let started = Instant::now();
        match load_image(path) {
            Ok(image) => Ok(Some(Frame { image, sequence, captured_at, name, decode_time: started.elapsed() })),
            Err(source) => {
                if let Some(stamp) = stamp {
                    self.failed.insert(stamp);
                }
                Err(FrameSourceError::Skipped { name, source: Box::new(source) })
            }
        }
    }
}

impl FrameSource for FileSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameSourceError> {
        loop {
            if let Some(path) = self.queue.pop_front() {
                match self.read(&path) {
                    Ok(Some(frame)) => {
                        self.frames_in_pass += 1;
                        return Ok(Some(frame));
                    }
                    Ok(None) => continue,
                    Err(error) => {
                        self.failures_in_pass += 1;
                        return Err(error);
                    }
                }
            }

            // The pass is over, or none has started yet.
            if self.passes > 0 {
                if !self.looping {
                    return Ok(None);
                }
                let nothing_new = self.frames_in_pass == 0 && self.failures_in_pass == 0;
                if nothing_new && !self.reported_empty_pass {
                    self.reported_empty_pass = true;
                    return Err(FrameSourceError::Empty { path: self.path().to_path_buf() });
                }
            }
            self.start_pass()?;
        }
    }

    fn is_looping(&self) -> bool {
        self.looping
    }

    fn is_live(&self) -> bool {
        false
    }

    fn description(&self) -> String {
        match &self.files {
            Files::Image(path) => format!("image {}", path.display()),
            Files::Folder(path) => format!("folder {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path) {
        image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30])).save(path).expect("writing a PNG");
    }

    fn names(source: &mut FileSource, calls: usize) -> Vec<String> {
        (0..calls)
            .map(|_| match source.next_frame() {
                Ok(Some(frame)) => format!("{}#{}", frame.name, frame.sequence),
                Ok(None) => "end".to_string(),
                Err(FrameSourceError::Skipped { name, .. }) => format!("skipped {name}"),
                Err(FrameSourceError::Empty { .. }) => "empty".to_string(),
                Err(error) => format!("error {error}"),
            })
            .collect()
    }

    #[test]
    fn folder_yields_images_in_name_order_then_ends() {
        let dir = tempfile::tempdir().expect("temporary folder");
        write_png(&dir.path().join("b.png"));
        write_png(&dir.path().join("a.PNG"));
        std::fs::write(dir.path().join("notes.txt"), "not an image").expect("writing a text file");
        std::fs::write(dir.path().join(".hidden.png"), "hidden").expect("writing a hidden file");

        let mut source = FileSource::folder(dir.path().to_path_buf(), false);
        assert_eq!(names(&mut source, 4), ["a.PNG#0", "b.png#1", "end", "end"]);
    }

    #[test]
    fn broken_file_is_skipped_once_when_looping() {
        let dir = tempfile::tempdir().expect("temporary folder");
        write_png(&dir.path().join("a.png"));
        std::fs::write(dir.path().join("b.jpg"), b"not a jpeg").expect("writing a broken file");

        let mut source = FileSource::folder(dir.path().to_path_buf(), true);
        assert_eq!(names(&mut source, 4), ["a.png#0", "skipped b.jpg", "a.png#2", "a.png#3"]);
    }

    #[test]
    fn looping_source_without_images_reports_empty() {
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::write(dir.path().join("b.jpg"), b"not a jpeg").expect("writing a broken file");

        let mut source = FileSource::folder(dir.path().to_path_buf(), true);
        assert_eq!(names(&mut source, 4), ["skipped b.jpg", "empty", "empty", "empty"]);
    }

    #[test]
    fn rewritten_file_is_tried_again() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("snapshot.png");
        std::fs::write(&path, b"half written").expect("writing a broken file");

        let mut source = FileSource::image(path.clone(), true);
        assert_eq!(names(&mut source, 2), ["skipped snapshot.png", "empty"]);

        write_png(&path);
        assert_eq!(names(&mut source, 2), ["snapshot.png#1", "snapshot.png#2"]);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let mut source = FileSource::folder(PathBuf::from("/nonexistent/edgedet-images"), false);
        assert!(matches!(source.next_frame(), Err(FrameSourceError::List { .. })));
    }

    #[test]
    fn image_source_without_loop_yields_once() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("one.png");
        write_png(&path);

        let mut source = FileSource::image(path, false);
        assert_eq!(names(&mut source, 3), ["one.png#0", "end", "end"]);
    }
}
