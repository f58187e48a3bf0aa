//! Output files: the four formats (raw, header, json, env) and the atomic writer that publishes them, through directories resolved without untrusted symbolic links.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) use crate::config::Format;
use crate::token::token::TokenRecord;
use crate::token::Token;
use rand::Rng;

/// The bytes of one output file for a token.
pub fn render(format: Format, token: &Token) -> Vec<u8> {
    match format {
        Format::Raw => token.secret().as_bytes().to_vec(),
        Format::Header => format!("Bearer {}", token.secret()).into_bytes(),
        Format::Json => render_record(&TokenRecord::from_token(token, None)),
        Format::Env => {
            let rec = TokenRecord::from_token(token, None);
            format!(
                "ACCESS_TOKEN={}\nTOKEN_TYPE=Bearer\nEXPIRES_AT={}\n",
                shell_quote(&rec.access_token),
                shell_quote(&rec.expires_at)
            )
            .into_bytes()
        }
    }
}

pub(crate) fn render_record(rec: &TokenRecord) -> Vec<u8> {
    // Serializing a struct of strings and numbers cannot fail.
    let mut v = serde_json::to_vec_pretty(rec).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Leaves safe values bare and single-quotes anything else, so `. token.env` never runs code.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=:".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A write that did not happen; the old file is untouched.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {step}: {source}")]
pub(crate) struct WriteError {
    pub(crate) path: PathBuf,
    pub(crate) step: &'static str,
    #[source]
    pub(crate) source: io::Error,
}

pub(crate) const TMP_MARK: &str = ".tv-tmp-";

#[cfg(target_os = "linux")]
const O_PATH: libc::c_int = libc::O_PATH;
#[cfg(not(target_os = "linux"))]
const O_PATH: libc::c_int = 0;

/// A file the sidecar writes, its directory resolved once (at start or reload) to a path without symlinks.
///
/// Every write walks that resolved path from `/` again, one component at a time with `O_NOFOLLOW`, and then
/// creates, renames and fsyncs through the directory descriptor it reached (`openat`, `renameat`). A directory
/// component replaced by a symlink after start (say by the less privileged uid that owns a parent directory) is
/// therefore never followed: the write is refused with an error naming the component, the old files stay, and
/// the failure counts like any other output write error. A directory deleted after start is created again, as
/// before. Symlinks that exist at resolution time are followed only where nobody but root or this sidecar could have
/// put them ([`resolve_dir`]: `/var/run -> /run` is fine, a link in the app's directory is refused), then trusted as
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The path as configured, for messages.
    path: PathBuf,
    /// The directory, absolute and free of symlinks when it was resolved.
    dir: PathBuf,
    name: std::ffi::OsString,
}

fn cstr(name: &std::ffi::OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `openat` returning an owned `File`.
fn open_at(dir: &File, name: &std::ffi::OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = cstr(name)?;
    // SAFETY: a valid descriptor and NUL-terminated name; the returned descriptor is owned by the File.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The process's umask as the kernel reports it (`Umask:` in `/proc/self/status`, Linux 4.7 and later), read once:
/// nothing here changes it. `None` when it cannot be read; every new file then gets an explicit chmod.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status =
            crate::fsread::read_bounded(Path::new("/proc/self/status"), 64 * 1024, true).ok()?;
        String::from_utf8_lossy(&status)
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
    })
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// This process's effective uid: the one uid besides root whose files and directories the sidecar trusts.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a path's directory could not be resolved.
#[derive(Debug)]
enum Unresolved {
    Io(io::Error),
    /// A symbolic link on the way that someone other than root or this sidecar could have put there.
    Planted(String),
}

/// The most symbolic links followed while resolving one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// `dir` as an absolute path without symbolic links; the part that does not exist yet is appended as it is (the first
/// write creates it). A symbolic link on the way is followed only where nobody but root or this process could have
/// put it: in a directory owned by one of them that is not writable by group or others, or, in a sticky directory
/// such as `/tmp`, a link owned by one of them (nobody else may replace it there). Anything else is refused: a link
/// planted by an app uid that owns a directory on the path would otherwise send the token, as root, wherever it
/// points, and be trusted from then on.
fn resolve_dir(dir: &Path) -> Result<PathBuf, Unresolved> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    let parts = |p: &Path| -> Vec<Option<std::ffi::OsString>> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(Some(n.to_os_string())),
                Component::ParentDir => Some(None),
                _ => None,
            })
            .collect()
    };
    let abs = std::path::absolute(dir).map_err(Unresolved::Io)?;
    let mut todo: std::collections::VecDeque<Option<std::ffi::OsString>> = parts(&abs).into();
    let mut at = PathBuf::from("/");
    let mut missing = false;
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        let Some(name) = part else {
            // `at` has no symbolic link in it, so its parent is the physical one, as the kernel would take it.
            at.pop();
            continue;
        };
        let next = at.join(&name);
        if missing {
            at = next;
            continue;
        }
        let meta = match fs::symlink_metadata(&next) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                at = next;
                continue;
            }
            Err(e) => return Err(Unresolved::Io(e)),
            Ok(m) => m,
        };
        if !meta.file_type().is_symlink() {
            at = next;
            continue;
        }
        let trusted = |uid: u32| uid == 0 || uid == euid();
        let parent = fs::symlink_metadata(&at).map_err(Unresolved::Io)?;
        let why = if !trusted(parent.uid()) {
            Some(format!("which uid {} owns", parent.uid()))
        } else if parent.mode() & 0o022 != 0
            && !(parent.mode() & 0o1000 != 0 && trusted(meta.uid()))
        {
            Some(format!(
                "which group or others may write (mode {:04o})",
                parent.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Unresolved::Planted(format!(
                "{} is a symbolic link in {}, {why}: someone other than root or this sidecar (uid {}) could have put it there to send the token elsewhere; refused. Use a path without symbolic links there, or one whose directories only root or this uid can write",
                next.display(),
                at.display(),
                euid()
            )));
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Unresolved::Io(io::Error::from_raw_os_error(libc::ELOOP)));
        }
        let target = fs::read_link(&next).map_err(Unresolved::Io)?;
        if target.is_absolute() {
            at = PathBuf::from("/");
        }
        for p in parts(&target).into_iter().rev() {
            todo.push_front(p);
        }
    }
    Ok(at)
}

/// Why the directory of output `path` cannot be trusted: a symbolic link on the way that someone other than root or
/// this sidecar could have planted ([`resolve_dir`]); `None` when there is none (or the path cannot be resolved now,
/// which its first write reports).
pub(crate) fn planted_symlink(path: &Path) -> Option<String> {
    match resolve_dir(parent_or_dot(path)) {
        Err(Unresolved::Planted(why)) => Some(why),
        _ => None,
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    let dir = parent(path);
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

impl Target {
    /// Resolves the directory of `path` now ([`resolve_dir`]): symbolic links followed only where they can be trusted,
    /// missing parts appended.
    pub(crate) fn resolve(path: &Path) -> Result<Target, WriteError> {
        let err = |source: io::Error| WriteError {
            path: path.to_path_buf(),
            step: "resolve the directory",
            source,
        };
        let name = path
            .file_name()
            .ok_or_else(|| {
                err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path has no file name",
                ))
            })?
            .to_os_string();
        let dir = resolve_dir(parent_or_dot(path)).map_err(|e| match e {
            Unresolved::Io(e) => err(e),
            Unresolved::Planted(why) => err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
        })?;
        Ok(Target {
            path: path.to_path_buf(),
            dir,
            name,
        })
    }

    /// A target whose directory could not be resolved: writes walk the path as given and report what fails.
    pub(crate) fn unresolved(path: &Path) -> Target {
        Target {
            path: path.to_path_buf(),
            dir: parent_or_dot(path).to_path_buf(),
            name: path.file_name().unwrap_or_default().to_os_string(),
        }
    }

    /// The path as configured.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn name(&self) -> &std::ffi::OsStr {
        &self.name
    }

    /// Walks the resolved directory from `/` without following symlinks; creates missing directories when `create`
    /// gives the file's (uid, gid). The last directory is opened readable, so it can be fsynced.
    ///
    /// A directory created here belongs to this sidecar, never to the file's uid: an owner could plant a symbolic link
    /// in it for a restart to follow, and the app only needs to pass through. Its group is the file's gid when one is
    /// set (mode 0750: the app's group may enter and list); with a uid but no gid, others may pass through but not
    /// list (0751), so the app's uid still reaches its file.
    pub(crate) fn open_dir(
        &self,
        create: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<File, WriteError> {
        use std::os::fd::AsRawFd;
        let err = |step: &'static str| {
            move |source: io::Error| WriteError {
                path: self.path.clone(),
                step,
                source,
            }
        };
        if let Some(dir) = self.open_dir_direct() {
            return Ok(dir);
        }
        let mut fd = File::open("/").map_err(err("open /"))?;
        let comps: Vec<&std::ffi::OsStr> = self.dir_names().collect();
        let mut so_far = PathBuf::from("/");
        for (i, n) in comps.iter().enumerate() {
            so_far.push(n);
            let last = i + 1 == comps.len();
            let flags =
                libc::O_DIRECTORY | libc::O_NOFOLLOW | if last { libc::O_RDONLY } else { O_PATH };
            let next = match open_at(&fd, n, flags, 0) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                    let c = cstr(n).map_err(err("create the directory"))?;
                    let (uid, gid) = create.unwrap_or_default();
                    let mode = if uid.is_some() && gid.is_none() {
                        0o751
                    } else {
                        0o750
                    };
                    // SAFETY: valid descriptor and NUL-terminated name.
                    match cvt(unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), mode) }) {
                        Ok(()) => {
                            // Through a descriptor of the directory just made, never by name: a name can be swapped
                            // for a symbolic link in between. The mode is set again because the umask may have taken
                            // the bit the app passes through with.
                            let made = open_at(
                                &fd,
                                n,
                                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY,
                                0,
                            )
                            .map_err(err("create the directory"))?;
                            made.set_permissions(fs::Permissions::from_mode(mode))
                                .map_err(err("create the directory"))?;
                            if gid.is_some() {
                                std::os::unix::fs::fchown(&made, None, gid)
                                    .map_err(err("set the owner"))?;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(err("create the directory")(e)),
                    }
                    open_at(&fd, n, flags, 0)
                }
                Err(e) if last && e.kind() == io::ErrorKind::PermissionDenied => {
                    // A directory we may write and enter but not list: still usable, just not fsynced.
                    open_at(&fd, n, libc::O_DIRECTORY | libc::O_NOFOLLOW | O_PATH, 0)
                }
                r => r,
            };
            fd = next.map_err(|e| {
                if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
                    WriteError {
                        path: self.path.clone(),
                        step: "reach the directory",
                        source: io::Error::new(
                            e.kind(),
                            format!(
                                "{} is no longer a directory (a symbolic link or file was put there after start); it is not followed",
                                so_far.display()
                            ),
                        ),
                    }
                } else {
                    err("reach the directory")(e)
                }
            })?;
        }
        Ok(fd)
    }

    /// The names from `/` down to the directory, as both ways of reaching it take them.
    fn dir_names(&self) -> impl Iterator<Item = &std::ffi::OsStr> {
        self.dir.components().filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
    }

    /// What [`Target::open_dir`]'s walk checks component by component, in one `openat2` that refuses a symbolic
    /// link anywhere on the way (`RESOLVE_NO_SYMLINKS`): one syscall instead of two per component, on every write.
    /// `None` when it cannot (a kernel before 5.6 or a seccomp filter that refuses it, a missing or symlinked component,
    /// a directory we may enter but not list): the walk then decides, creates, and names the problem.
    fn open_dir_direct(&self) -> Option<File> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return None;
        }
        let mut path = Vec::new();
        for n in self.dir_names() {
            path.push(b'/');
            path.extend_from_slice(n.as_bytes());
        }
        if path.is_empty() {
            path.push(b'/');
        }
        let path = std::ffi::CString::new(path).ok()?;
        // SAFETY: an all-zero open_how is the documented "no flags" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags =
            (libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: a NUL-terminated path and an open_how of the size passed; the descriptor returned is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            if matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EPERM)
            ) {
                UNAVAILABLE.store(true, Ordering::Relaxed);
            }
            return None;
        }
        // SAFETY: `fd` is fresh and owned by nobody else.
        Some(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    /// Replaces the file atomically through the directory handle: temp file, write, owner and mode, fsync, rename, fsync the directory.
    pub(crate) fn write(
        &self,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), WriteError> {
        use std::os::fd::AsRawFd;
        let err = |step: &'static str| {
            move |source: io::Error| WriteError {
                path: self.path.clone(),
                step,
                source,
            }
        };
        let dir = self.open_dir(Some((uid, gid)))?;
        let tmp = std::ffi::OsString::from(format!(
            ".{}{TMP_MARK}{:016x}",
            self.name.to_string_lossy(),
            rand::rng().random::<u64>()
        ));
        let result = (|| {
            // Created with its final mode when the umask leaves that mode whole: one syscall and one inotify event
            // less per write (every watcher of the directory wakes for a chmod).
            let exact = umask().is_some_and(|m| mode & m == 0);
            let mut f = open_at(
                &dir,
                &tmp,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                if exact { mode } else { 0o600 },
            )
            .map_err(err("create a temporary file"))?;
            f.write_all(bytes).map_err(err("write"))?;
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&f, uid, gid).map_err(err("set the owner"))?;
            }
            if !exact {
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(err("set the mode"))?;
            }
            f.sync_all().map_err(err("flush to disk"))?;
            drop(f);
            let (from, to) = (
                cstr(&tmp).map_err(err("rename into place"))?,
                cstr(&self.name).map_err(err("rename into place"))?,
            );
            // SAFETY: valid descriptor and NUL-terminated names.
            cvt(unsafe {
                libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr())
            })
            .map_err(err("rename into place"))
        })();
        if result.is_err() {
            if let Ok(c) = cstr(&tmp) {
                // SAFETY: valid descriptor and NUL-terminated name.
                unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
            }
            return result;
        }
        // The rename is only durable once the directory entry is; a failure here leaves the new file in place.
        let _ = dir.sync_all();
        Ok(())
    }

    /// Whether the file already holds these bytes, mode and owner (read through the directory handle, bounded).
    pub(crate) fn holds(
        &self,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(dir) = self.open_dir(None) else {
            return false;
        };
        match crate::fsread::read_bounded_at(&dir, &self.name, &self.path, bytes.len() as u64) {
            Ok((b, meta)) => {
                b == bytes
                    && meta.permissions().mode() & 0o7777 == mode
                    && uid.is_none_or(|u| u == meta.uid())
                    && gid.is_none_or(|g| g == meta.gid())
            }
            Err(_) => false,
        }
    }

    /// Deletes the file (never through a symlinked directory).
    pub(crate) fn remove(&self) -> Result<(), WriteError> {
        use std::os::fd::AsRawFd;
        let dir = self.open_dir(None)?;
        let c = cstr(&self.name).map_err(|source| WriteError {
            path: self.path.clone(),
            step: "remove",
            source,
        })?;
        // SAFETY: valid descriptor and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map_err(|source| {
            WriteError {
                path: self.path.clone(),
                step: "remove",
                source,
            }
        })
    }

    /// Removes temporary files a killed writer left next to this file.
    pub(crate) fn remove_stale_temps(&self) {
        remove_stale_temps(&self.dir.join(&self.name));
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Removes temporary files a killed writer left next to `path`.
pub(crate) fn remove_stale_temps(path: &Path) {
    let (dir, Some(name)) = (parent(path), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}{TMP_MARK}", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Why an output path could not be written now ([`check_writable`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotWritable {
    #[error("{} is a directory; give a file path", .0.display())]
    IsADirectory(PathBuf),
    #[error("{} is not a directory, so {} cannot be created", .dir.display(), .path.display())]
    ParentNotADirectory { dir: PathBuf, path: PathBuf },
    #[error("cannot write in {}: {source}; mount a writable volume there (an emptyDir) or fix its permissions", .dir.display())]
    CannotWrite {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Says whether `path` could be written now, without touching an existing file.
pub(crate) fn check_writable(path: &Path) -> Result<(), NotWritable> {
    if path.is_dir() {
        return Err(NotWritable::IsADirectory(path.to_path_buf()));
    }
    let mut dir = parent(path).to_path_buf();
    if dir.as_os_str().is_empty() {
        dir = PathBuf::from(".");
    }
    // The nearest existing ancestor is where the first write will create directories.
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => {
                dir = PathBuf::from(".");
                break;
            }
        }
    }
    if !dir.is_dir() {
        return Err(NotWritable::ParentNotADirectory {
            dir,
            path: path.to_path_buf(),
        });
    }
    let probe = dir.join(format!(
        ".token-vendor-check{TMP_MARK}{:016x}",
        rand::rng().random::<u64>()
    ));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(NotWritable::CannotWrite { dir, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::LifetimeSource;
    use secrecy::SecretString;
    use std::time::{Duration, SystemTime};

    fn token(s: &str) -> Token {
        Token {
            access_token: SecretString::from(s.to_string()),
            issued_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            lifetime: Duration::from_secs(3600),
            scope: Some("read".into()),
            lifetime_source: LifetimeSource::ExpiresIn,
        }
    }

    /// One write to `path` through a [`Target`] resolved now (the daemon resolves once and keeps it).
    fn write_atomic(
        path: &Path,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), WriteError> {
        Target::resolve(path)?.write(bytes, mode, uid, gid)
    }

    #[test]
    fn every_format_renders() {
        let t = token("abc.def-ghi");
        assert_eq!(render(Format::Raw, &t), b"abc.def-ghi");
        assert_eq!(render(Format::Header, &t), b"Bearer abc.def-ghi");
        assert_eq!(
            String::from_utf8(render(Format::Env, &t)).unwrap(),
            "ACCESS_TOKEN=abc.def-ghi\nTOKEN_TYPE=Bearer\nEXPIRES_AT=2027-01-15T09:00:00.000Z\n"
        );
        let j: serde_json::Value = serde_json::from_slice(&render(Format::Json, &t)).unwrap();
        assert_eq!(j["access_token"], "abc.def-ghi");
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["expires_in"], 3600.0);
        assert!(
            j["expires_in"].is_u64(),
            "a whole lifetime is an integer in token.json (typed readers refuse 3600.0): {j}"
        );
        assert_eq!(j["issued_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(j["refresh_time"], "2027-01-15T08:59:00.000Z");
        assert_eq!(j["expires_at"], "2027-01-15T09:00:00.000Z");
        assert_eq!(j["scope"], "read");
        assert!(j.get("fingerprint").is_none());
    }

    #[test]
    fn env_values_are_shell_safe() {
        let t = token("a'b$(x)`y`");
        let env = String::from_utf8(render(Format::Env, &t)).unwrap();
        assert!(env.starts_with(r"ACCESS_TOKEN='a'\''b$(x)`y`'"), "{env}");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{env}\nprintf %s \"$ACCESS_TOKEN\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a'b$(x)`y`");
    }

    #[test]
    fn atomic_write_sets_mode_creates_dirs_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/token");
        write_atomic(&path, b"one", 0o640, None, None).unwrap();
        write_atomic(&path, b"two", 0o600, None, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.path().join("a/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn every_mode_is_set_exactly_whatever_the_umask_takes() {
        // The suite runs with the usual umask 022: 0640 and 0600 are created with their mode, 0666 and 0664 lose
        // bits to it at creation and need the chmod.
        assert!(
            umask().is_some(),
            "Linux reports the umask in /proc/self/status"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for mode in [0o640, 0o666, 0o600, 0o664, 0o644, 0o400] {
            write_atomic(&path, b"t", mode, None, None).unwrap();
            let got = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "asked {mode:o}, got {got:o}");
        }
    }

    #[test]
    fn the_one_syscall_open_refuses_what_the_walk_refuses() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("a/b");
        fs::create_dir_all(&real).unwrap();
        let t = Target::resolve(&real.join("token")).unwrap();
        let opened = t
            .open_dir_direct()
            .expect("openat2 (Linux 5.6+) opens a plain path");
        assert_eq!(
            opened.metadata().unwrap().ino(),
            fs::metadata(&real).unwrap().ino()
        );
        // A component swapped for a symbolic link, or missing: the walk decides (and refuses, or creates).
        fs::rename(&real, dir.path().join("a/b-old")).unwrap();
        assert!(t.open_dir_direct().is_none(), "missing");
        std::os::unix::fs::symlink(dir.path().join("a/b-old"), &real).unwrap();
        assert!(t.open_dir_direct().is_none(), "a symlinked last component");
        fs::remove_file(&real).unwrap();
        fs::rename(dir.path().join("a"), dir.path().join("z")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("z"), dir.path().join("a")).unwrap();
        fs::rename(dir.path().join("z/b-old"), dir.path().join("z/b")).unwrap();
        assert!(real.is_dir(), "the path works when symlinks are followed");
        assert!(
            t.open_dir_direct().is_none(),
            "a symlinked middle component"
        );
        assert_eq!(t.open_dir(None).unwrap_err().step, "reach the directory");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_atomic(&path, b"old", 0o640, None, None).unwrap();
        // An owner we cannot take (as non-root) or the rename onto a directory fails: use a directory target.
        let bad = dir.path().join("sub");
        fs::create_dir(&bad).unwrap();
        fs::write(bad.join("x"), b"").unwrap();
        let e = write_atomic(&bad, b"new", 0o640, None, None).unwrap_err();
        assert_eq!(e.step, "rename into place");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_resolution_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/token");
        let target = Target::resolve(&out).unwrap();
        target.write(b"one", 0o640, None, None).unwrap();
        // The same uid (or a less privileged one owning `a`) moves `b` away and plants a symlink to elsewhere.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::rename(dir.path().join("a/b"), dir.path().join("a/b-old")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("a/b")).unwrap();
        let e = target.write(b"two", 0o640, None, None).unwrap_err();
        assert_eq!(e.step, "reach the directory", "{e}");
        assert!(e.to_string().contains("is not followed"), "{e}");
        assert!(e.to_string().contains("a/b"), "{e}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written through the symlink"
        );
        assert!(!target.holds(b"one", 0o640, None, None));
        assert!(target.remove().is_err());
        assert_eq!(fs::read(dir.path().join("a/b-old/token")).unwrap(), b"one");
        // A symlink that is there when the path is resolved is resolved once, like any path.
        let again = Target::resolve(&out).unwrap();
        again.write(b"three", 0o640, None, None).unwrap();
        assert_eq!(fs::read(elsewhere.join("token")).unwrap(), b"three");
    }

    #[test]
    fn a_symlink_is_followed_at_resolution_only_where_nobody_else_could_have_planted_it() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        std::os::unix::fs::symlink("../real", open.join("link")).unwrap();
        // Ours, not writable by others: followed, `..` taken from where the link lives.
        let t = Target::resolve(&open.join("link/token")).unwrap();
        assert_eq!(t.dir, real.canonicalize().unwrap());
        assert_eq!(planted_symlink(&open.join("link/token")), None);
        // Writable by others (no sticky bit): anyone could have put it there.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let why = planted_symlink(&open.join("link/token")).expect("refused");
        assert!(
            why.contains("link is a symbolic link in") && why.contains("mode 0777"),
            "{why}"
        );
        let e = Target::resolve(&open.join("link/a/b/token")).unwrap_err();
        assert_eq!(e.step, "resolve the directory");
        assert!(e.to_string().contains("could have put it there"), "{e}");
        // Sticky (like /tmp): others may add links but not replace ours, so our own link is trusted.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(planted_symlink(&open.join("link/token")), None);
        // A link further down, reached through a trusted one, is checked in its own directory.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let shared = real.join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(dir.path(), shared.join("up")).unwrap();
        assert!(planted_symlink(&open.join("link/shared/up/token")).is_some());
        // No link at all: a directory writable by others is the write's business, not this check's.
        assert_eq!(planted_symlink(&shared.join("x/token")), None);
        // A loop ends in an error, not a hang.
        std::os::unix::fs::symlink("loop", real.join("loop")).unwrap();
        assert!(Target::resolve(&real.join("loop/token")).is_err());
    }

    #[test]
    fn created_directories_are_the_sidecars_and_let_the_file_owner_pass_only() {
        let dir = tempfile::tempdir().unwrap();
        let me = euid();
        write_atomic(&dir.path().join("a/b/token"), b"x", 0o640, Some(me), None).unwrap();
        for d in ["a", "a/b"] {
            let m = fs::metadata(dir.path().join(d)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o751, "{d}");
        }
        // With a group: the group may enter and list, others nothing.
        let gid = std::os::unix::fs::MetadataExt::gid(&fs::metadata(dir.path()).unwrap());
        write_atomic(
            &dir.path().join("c/d/token"),
            b"x",
            0o640,
            Some(me),
            Some(gid),
        )
        .unwrap();
        for d in ["c", "c/d"] {
            let m = fs::metadata(dir.path().join(d)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o750, "{d}");
        }
    }

    #[test]
    fn a_directory_deleted_after_resolution_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(&dir.path().join("a/token")).unwrap();
        target.write(b"one", 0o640, None, None).unwrap();
        assert!(target.holds(b"one", 0o640, None, None));
        fs::remove_dir_all(dir.path().join("a")).unwrap();
        target.write(b"two", 0o640, None, None).unwrap();
        assert_eq!(fs::read(dir.path().join("a/token")).unwrap(), b"two");
        target.remove().unwrap();
        assert!(!dir.path().join("a/token").exists());
    }

    #[test]
    fn stale_temps_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(dir.path().join(format!(".token{TMP_MARK}0123")), b"x").unwrap();
        fs::write(dir.path().join("other"), b"x").unwrap();
        remove_stale_temps(&path);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("other")]);
    }

    #[test]
    fn check_writable_finds_the_nearest_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("x/y/token")).is_ok());
        assert!(
            !dir.path().join("x").exists(),
            "check must not create directories"
        );
        fs::write(dir.path().join("file"), b"").unwrap();
        assert!(check_writable(&dir.path().join("file/token"))
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert!(check_writable(dir.path())
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
    }
}
