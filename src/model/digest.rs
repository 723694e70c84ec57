//! SHA-256 of model files, remembered between starts.
//!
//! An int8 load checks that its calibration was made for the weights it reads,
//! and `precision = "auto"` keys its cached choice by the files' hashes, so
//! every start hashed the weights. That took 0.2 s for yolov4's 258 MB on the
//! README's x86 machine, which has SHA instructions. The Cortex-A72 of the
//! Raspberry Pi 4 has none, and there it is estimated to take several seconds.
//!
//! So the hash of each large file is kept in [`MEMO_FILE`] in the cache folder
//! with the file's size, device, inode, and modification and change times,
//! and reused while all of them match. Writing a file sets its change time
//! (ctime), which no tool can set back, so a rewritten file is hashed again,
//! even when its size and modification time were kept. File times have the
//! resolution of the kernel's clock tick, so a write within the tick of the
//! previous one leaves them as they were. As git does for its index, a hash
//! is therefore only reused when the file had not changed for [`SETTLED_NS`]
//! before it was hashed.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the file in the cache folder that remembers hashes.
pub const MEMO_FILE: &str = "file-hashes.json";

/// Files smaller than this are hashed every time: reading and writing the
/// memo would cost more than hashing them.
pub const MEMO_MIN_BYTES: u64 = 1 << 20;

/// How long a file must have been unchanged when it was hashed for the hash
/// to be reused. Clock ticks are 10 ms or less with Linux's usual HZ of 100 to 1000.
pub const SETTLED_NS: i64 = 100_000_000;

/// The identity of one version of a file, from its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    size: u64,
    device: u64,
    inode: u64,
    modified_ns: i64,
    changed_ns: i64,
}

impl Fingerprint {
    fn of(metadata: &std::fs::Metadata) -> Fingerprint {
        // Nanoseconds fit in i64 until the year 2262.
        let nanoseconds = |seconds: i64, nanoseconds: i64| seconds.saturating_mul(1_000_000_000) + nanoseconds;
        Fingerprint {
            size: metadata.len(),
            device: metadata.dev(),
            inode: metadata.ino(),
            modified_ns: nanoseconds(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: nanoseconds(metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemoEntry {
    #[serde(flatten)]
    fingerprint: Fingerprint,
    /// When the file was hashed, in nanoseconds since the Unix epoch.
    hashed_ns: i64,
    sha256: String,
}

impl MemoEntry {
    fn is_for(&self, fingerprint: &Fingerprint) -> bool {
        self.fingerprint == *fingerprint && self.hashed_ns - fingerprint.changed_ns >= SETTLED_NS
    }
}

/// The memo file: remembered hashes by absolute file path.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    files: BTreeMap<String, MemoEntry>,
}

/// Returns the SHA-256 of `path` in lowercase hex, reusing the hash that
/// `memo_dir` remembers for this version of the file, and remembering it
/// there otherwise. A memo that cannot be read or written only costs the
/// hashing, with a debug log line.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_of(path: &Path, memo_dir: Option<&Path>) -> io::Result<String> {
    let metadata = std::fs::metadata(path)?;
    let memo_path = memo_dir.filter(|_| metadata.len() >= MEMO_MIN_BYTES).map(|dir| dir.join(MEMO_FILE));
    let Some(memo_path) = memo_path else { return hash_file(path) };

    let fingerprint = Fingerprint::of(&metadata);
    let key = std::fs::canonicalize(path)?.display().to_string();
    let mut memo = read_memo(&memo_path);
    if let Some(entry) = memo.files.get(&key).filter(|entry| entry.is_for(&fingerprint)) {
        log::debug!("{}: SHA-256 remembered in {}", path.display(), memo_path.display());
        return Ok(entry.sha256.clone());
    }

    let hashed_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
    let sha256 = hash_file(path)?;
    // Entries of files that are gone would only grow the memo.
    memo.files.retain(|file, _| Path::new(file).exists());
    memo.files.insert(key, MemoEntry { fingerprint, hashed_ns, sha256: sha256.clone() });
    if let Err(error) = write_memo(&memo_path, &memo) {
        log::debug!("{}: could not remember its SHA-256 in {}: {error}", path.display(), memo_path.display());
    }
    Ok(sha256)
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Reads the memo, or an empty one when it is missing or unreadable.
fn read_memo(path: &Path) -> Memo {
    let Ok(text) = std::fs::read_to_string(path) else { return Memo::default() };
    serde_json::from_str(&text).unwrap_or_else(|error| {
        log::debug!("{}: not a valid hash memo, starting a new one: {error}", path.display());
        Memo::default()
    })
}

/// Replaces the memo in one rename, so that a process reading it at the same
/// time reads the old or the new file, never a part.
fn write_memo(path: &Path, memo: &Memo) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut file, serde_json::to_string_pretty(memo).map_err(io::Error::other)?.as_bytes())?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = MEMO_MIN_BYTES as usize + 4096;

    /// Waits until a file written now counts as settled.
    fn settle() {
        std::thread::sleep(std::time::Duration::from_nanos(SETTLED_NS as u64 + 50_000_000));
    }

    fn expected_sha256(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn remembered_hash_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (weights, cache) = (dir.path().join("model.weights"), dir.path().join("cache"));
        let bytes: Vec<u8> = (0..SIZE).map(|index| (index % 251) as u8).collect();
        std::fs::write(&weights, &bytes).unwrap();
        settle();

        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), expected_sha256(&bytes));
        let memo_path = cache.join(MEMO_FILE);
        let text = std::fs::read_to_string(&memo_path).unwrap();
        assert!(text.contains(&expected_sha256(&bytes)), "{text}");

        // A memo entry with another hash for the same version of the file is
        // returned: proof that the file was not read again.
        std::fs::write(&memo_path, text.replace(&expected_sha256(&bytes), "remembered")).unwrap();
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), "remembered");
    }

    #[test]
    fn rewritten_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (weights, cache) = (dir.path().join("model.weights"), dir.path().join("cache"));
        let first = vec![1u8; SIZE];
        std::fs::write(&weights, &first).unwrap();
        let modified = std::fs::metadata(&weights).unwrap().modified().unwrap();
        settle();
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), expected_sha256(&first));

        // Same size, in place, with the modification time set back as `cp -p`
        // or `touch -r` would: only the change time differs.
        let second = vec![2u8; SIZE];
        std::fs::write(&weights, &second).unwrap();
        std::fs::File::options().write(true).open(&weights).unwrap().set_modified(modified).unwrap();
        assert_eq!(std::fs::metadata(&weights).unwrap().modified().unwrap(), modified);
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), expected_sha256(&second));
    }

    #[test]
    fn small_files_and_no_cache_skip_the_memo() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let cfg = dir.path().join("model.cfg");
        std::fs::write(&cfg, b"[net]\n").unwrap();
        assert_eq!(sha256_of(&cfg, Some(&cache)).unwrap(), expected_sha256(b"[net]\n"));
        assert!(!cache.join(MEMO_FILE).exists());

        let weights = dir.path().join("model.weights");
        std::fs::write(&weights, vec![3u8; SIZE]).unwrap();
        assert_eq!(sha256_of(&weights, None).unwrap(), expected_sha256(&vec![3u8; SIZE]));
    }

    #[test]
    fn unusable_memo_still_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.weights");
        std::fs::write(&weights, vec![4u8; SIZE]).unwrap();
        // A cache "folder" that is a file: the memo can be neither read nor written.
        let not_a_dir = dir.path().join("cache");
        std::fs::write(&not_a_dir, b"x").unwrap();
        assert_eq!(sha256_of(&weights, Some(&not_a_dir)).unwrap(), expected_sha256(&vec![4u8; SIZE]));

        // A corrupt memo is replaced.
        let cache = dir.path().join("cache2");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(cache.join(MEMO_FILE), b"{ not json").unwrap();
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), expected_sha256(&vec![4u8; SIZE]));
        let text = std::fs::read_to_string(cache.join(MEMO_FILE)).unwrap();
        assert!(text.contains(&expected_sha256(&vec![4u8; SIZE])), "{text}");
    }

    #[test]
    fn racy_entry_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (weights, cache) = (dir.path().join("model.weights"), dir.path().join("cache"));
        let bytes = vec![5u8; SIZE];
        std::fs::write(&weights, &bytes).unwrap();
        let fingerprint = Fingerprint::of(&std::fs::metadata(&weights).unwrap());
        let key = std::fs::canonicalize(&weights).unwrap().display().to_string();
        let memo_with = |hashed_ns: i64| {
            let entry = MemoEntry { fingerprint: fingerprint.clone(), hashed_ns, sha256: "remembered".into() };
            write_memo(&cache.join(MEMO_FILE), &Memo { files: BTreeMap::from([(key.clone(), entry)]) }).unwrap();
        };

        // Hashed within SETTLED_NS of the last write: hashed again.
        memo_with(fingerprint.changed_ns + SETTLED_NS - 1);
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), expected_sha256(&bytes));
        // Hashed SETTLED_NS after it: reused.
        memo_with(fingerprint.changed_ns + SETTLED_NS);
        assert_eq!(sha256_of(&weights, Some(&cache)).unwrap(), "remembered");
    }
}
