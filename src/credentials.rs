//! Where the client id and secret come from (inline, a mounted file, an environment variable), as they are at each
//! request; credential files are looked at (`stat`) for every request and read again whenever they changed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::fsread::{self, ReadError, CREDENTIAL_LIMIT};

/// Where one credential is read from. `Debug` never shows an inline value.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    Inline(SecretString),
    File(PathBuf),
    Env(String),
}

impl CredentialSource {
    pub fn inline(value: String) -> Self {
        CredentialSource::Inline(SecretString::from(value))
    }

    /// The config key that selects this source, for error messages.
    pub(crate) fn key_name(&self, base: &str) -> String {
        match self {
            CredentialSource::Inline(_) => base.to_string(),
            CredentialSource::File(_) => format!("{base}_file"),
            CredentialSource::Env(_) => format!("{base}_env"),
        }
    }

    /// The file this credential lives in, if any (its directory is watched for rotation).
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            CredentialSource::File(p) => Some(p),
            _ => None,
        }
    }

    /// The value now. A file is looked up by path each time ([`read_file_bytes`]), so a Kubernetes `..data` swap or
    /// an edit is seen at once.
    pub(crate) fn load(&self) -> Result<SecretString, CredentialError> {
        match self {
            CredentialSource::Inline(s) => Ok(s.clone()),
            CredentialSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                Ok(_) => Err(CredentialError::EnvEmpty { name: name.clone() }),
                Err(_) => Err(CredentialError::EnvUnset { name: name.clone() }),
            },
            CredentialSource::File(path) => read_file(path),
        }
    }
}

impl PartialEq for CredentialSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CredentialSource::Inline(a), CredentialSource::Inline(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            (CredentialSource::File(a), CredentialSource::File(b)) => a == b,
            (CredentialSource::Env(a), CredentialSource::Env(b)) => a == b,
            _ => false,
        }
    }
}

fn read_file(path: &Path) -> Result<SecretString, CredentialError> {
    let path_buf = || path.to_path_buf();
    // Called on the runtime thread, once per credential per request (token::auth hashes what it read for the rotation
    // check instead of reading again). It stays there because it cannot wait: the open does not wait for a FIFO's
    // writer (O_NONBLOCK), the fstat of the descriptor refuses a FIFO, device or directory, and a regular file is
    // read to at most CREDENTIAL_LIMIT bytes, which from a Secret volume (tmpfs) costs microseconds (fsread's module
    // doc; bench/sign_cost.rs measures the whole request build). A file on a network file system that hangs would
    // hold the runtime thread; Kubernetes mounts Secrets on tmpfs. Symlinks are followed: a Secret volume is made of
    // them.
    let bytes = read_file_bytes(path, CREDENTIAL_LIMIT).map_err(|e| match e {
        ReadError::TooLarge { .. } => CredentialError::TooLarge { path: path_buf() },
        other => CredentialError::Read {
            path: path_buf(),
            source: other,
        },
    })?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| CredentialError::NotUtf8 { path: path_buf() })?;
    // Exactly one trailing newline is what editors and `echo` add; anything more is kept as written.
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.is_empty() {
        return Err(CredentialError::Empty { path: path_buf() });
    }
    Ok(SecretString::from(text))
}

/// A credential file whose metadata has not changed since the file was last read is not read again: its bytes are
/// kept, wiped when dropped. Reading costs an open, reads and a close, and the open wakes every watcher of the file's
/// directory (the config watcher watches a Secret's directory for rotation); a `stat` does neither. The bytes are
/// kept only when the file's ctime was at least [`SETTLED`] old when it was read: a file's timestamps are as coarse
/// as the kernel's clock tick, and an in-place rewrite of the same size within the same tick as an earlier one would
/// otherwise leave every stamp unchanged. Any later change sets a ctime past the read's start, so it shows.
const SETTLED: Duration = Duration::from_secs(2);

/// At most this many files' bytes are kept; past it the least recently used goes (and is read at its next use).
const KEPT_FILES: usize = 256;

/// What a file's bytes are known by: a new file, a swapped `..data` link, an edit or a `touch` changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the file had stopped changing [`SETTLED`] before `read_at`.
    fn settled_at(&self, read_at: SystemTime) -> bool {
        let Ok(ctime) = u64::try_from(self.ctime.0) else {
            return false;
        };
        let changed = SystemTime::UNIX_EPOCH
            + Duration::from_secs(ctime)
            + Duration::from_nanos(u64::try_from(self.ctime.1).unwrap_or(0));
        changed + SETTLED <= read_at
    }
}

struct Kept {
    stamp: FileStamp,
    bytes: SecretSlice<u8>,
    used: u64,
}

/// Kept bytes by path, with a use counter for choosing what to drop.
struct KeptFiles {
    files: BTreeMap<PathBuf, Kept>,
    uses: u64,
}

impl KeptFiles {
    const fn new() -> KeptFiles {
        KeptFiles {
            files: BTreeMap::new(),
            uses: 0,
        }
    }

    /// The bytes kept for `path` if they were read from a file with this stamp.
    fn get(&mut self, path: &Path, stamp: &FileStamp) -> Option<Vec<u8>> {
        self.uses += 1;
        let k = self.files.get_mut(path).filter(|k| k.stamp == *stamp)?;
        k.used = self.uses;
        Some(k.bytes.expose_secret().to_vec())
    }

    /// Keeps what was just read from `path`, dropping the least recently used file when full.
    fn keep(&mut self, path: &Path, stamp: FileStamp, bytes: &[u8]) {
        if self.files.len() >= KEPT_FILES && !self.files.contains_key(path) {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.files.remove(&oldest);
            }
        }
        self.uses += 1;
        self.files.insert(
            path.to_path_buf(),
            Kept {
                stamp,
                bytes: SecretSlice::from(bytes.to_vec()),
                used: self.uses,
            },
        );
    }
}

static KEPT: Mutex<KeptFiles> = Mutex::new(KeptFiles::new());

/// A credential, key or assertion file's bytes as they are now (bounded, a regular file; symlinks followed): from
/// memory when the file is unchanged since it was read, else read again. Errors are never kept.
pub(crate) fn read_file_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_file_bytes_at(path, limit, SystemTime::now(), &KEPT).map(|(bytes, _)| bytes)
}

/// [`read_file_bytes`] at `now` with `kept`; also says whether the bytes were kept ones.
fn read_file_bytes_at(
    path: &Path,
    limit: u64,
    now: SystemTime,
    kept: &Mutex<KeptFiles>,
) -> Result<(Vec<u8>, bool), ReadError> {
    let lock = || kept.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_file() {
            if let Some(bytes) = lock().get(path, &FileStamp::of(&m)) {
                return Ok((bytes, true));
            }
        }
    }
    let (bytes, meta) = fsread::read_bounded_with_meta(path, limit)?;
    let stamp = FileStamp::of(&meta);
    if stamp.settled_at(now) {
        lock().keep(path, stamp, &bytes);
    } else {
        lock().files.remove(path);
    }
    Ok((bytes, false))
}

/// Why a credential could not be read. Never contains the credential itself.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("cannot read {}: larger than {CREDENTIAL_LIMIT} bytes; is this the right file?", path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot read {}: not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot read {}: the file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("environment variable {name} is not set (or not UTF-8)")]
    EnvUnset { name: String },
}

/// The pair sent to the token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) client_id: SecretString,
    pub(crate) client_secret: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        for (content, want) in [
            ("abc\n", "abc"),
            ("abc\r\n", "abc"),
            ("abc\n\n", "abc\n"),
            ("abc", "abc"),
            (" a b ", " a b "),
        ] {
            let p = dir.path().join("s");
            std::fs::write(&p, content).unwrap();
            let got = CredentialSource::File(p).load().unwrap();
            assert_eq!(got.expose_secret(), want, "{content:?}");
        }
    }

    #[test]
    fn missing_empty_and_huge_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        let e = CredentialSource::File(p.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(CredentialSource::File(p.clone())
            .load()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::write(&p, vec![b'a'; 70_000]).unwrap();
        assert!(CredentialSource::File(p)
            .load()
            .unwrap_err()
            .to_string()
            .contains("larger than"));
    }

    /// A moment at which every file written by the test counts as settled.
    fn later() -> SystemTime {
        SystemTime::now() + SETTLED + Duration::from_secs(60)
    }

    #[test]
    fn an_unchanged_file_is_read_once_and_every_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "first-value").unwrap();
        let kept = Mutex::new(KeptFiles::new());
        let read = |p: &Path| read_file_bytes_at(p, CREDENTIAL_LIMIT, later(), &kept).unwrap();
        assert_eq!(read(&p), (b"first-value".to_vec(), false));
        assert_eq!(read(&p), (b"first-value".to_vec(), true), "unchanged: kept");
        // An in-place rewrite of the same length (what `echo -n > file` does), then a `touch`.
        std::fs::write(&p, "other-value").unwrap();
        assert_eq!(read(&p), (b"other-value".to_vec(), false));
        assert_eq!(read(&p), (b"other-value".to_vec(), true));
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        assert!(!read(&p).1, "a touch is a change");
        // A Kubernetes Secret volume: the name is a link through `..data`, which is swapped to a new directory.
        let (v1, v2) = (dir.path().join("..v1"), dir.path().join("..v2"));
        for (d, value) in [(&v1, "volume-one"), (&v2, "volume-two")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("key"), value).unwrap();
        }
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        let key = dir.path().join("key");
        std::os::unix::fs::symlink("..data/key", &key).unwrap();
        assert_eq!(read(&key), (b"volume-one".to_vec(), false));
        assert!(read(&key).1);
        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(read(&key), (b"volume-two".to_vec(), false));
        // Gone, or no longer a regular file: the error, never the bytes kept from before.
        std::fs::remove_file(&p).unwrap();
        assert!(read_file_bytes_at(&p, CREDENTIAL_LIMIT, later(), &kept).is_err());
        std::fs::create_dir(&p).unwrap();
        assert!(read_file_bytes_at(&p, CREDENTIAL_LIMIT, later(), &kept).is_err());
    }

    #[test]
    fn a_file_that_just_changed_is_read_again_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "fresh").unwrap();
        let now = SystemTime::now();
        let kept = Mutex::new(KeptFiles::new());
        for _ in 0..3 {
            // Its stamps could still be those of a rewrite within the same clock tick: not kept.
            let got = read_file_bytes_at(&p, CREDENTIAL_LIMIT, now, &kept).unwrap();
            assert_eq!(got, (b"fresh".to_vec(), false));
        }
        let ctime = FileStamp::of(&std::fs::metadata(&p).unwrap());
        assert!(!ctime.settled_at(now));
        assert!(ctime.settled_at(now + SETTLED + Duration::from_secs(1)));
    }

    #[test]
    fn kept_files_are_bounded_and_the_least_recently_used_goes() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Mutex::new(KeptFiles::new());
        let read = |i: usize| {
            let p = dir.path().join(format!("s{i}"));
            if !p.exists() {
                std::fs::write(&p, "v").unwrap();
            }
            read_file_bytes_at(&p, CREDENTIAL_LIMIT, later(), &kept)
                .unwrap()
                .1
        };
        for i in 0..KEPT_FILES + 10 {
            assert!(!read(i));
            assert!(
                read(0),
                "file 0 is used at every step, so never the one to go"
            );
        }
        assert_eq!(kept.lock().unwrap().files.len(), KEPT_FILES);
        assert!(!read(1), "the least recently used went");
    }

    #[test]
    fn env_source_reports_unset_variable_without_value() {
        let e = CredentialSource::Env("TOKEN_VENDOR_TEST_SURELY_UNSET".into())
            .load()
            .unwrap_err();
        assert!(e
            .to_string()
            .contains("TOKEN_VENDOR_TEST_SURELY_UNSET is not set"));
    }

    #[test]
    fn debug_redacts_inline_values() {
        let s = CredentialSource::inline("hunter2".into());
        let c = Credentials {
            client_id: SecretString::from("id-x"),
            client_secret: SecretString::from("hunter2"),
        };
        for dbg in [format!("{s:?}"), format!("{c:?}")] {
            assert!(!dbg.contains("hunter2") && !dbg.contains("id-x"), "{dbg}");
        }
    }
}
