//! Bounded, non-blocking reads of the files the sidecar is given (config, credentials, PEM, state) and the YAML pre-check (nesting, anchors and aliases) that runs before the parser.
//!
//! A path may name a FIFO (a read blocks forever), a device (`/dev/zero` never ends and reports size 0), a
//! directory or a symlink planted by someone else. [`read_bounded`] opens with `O_NONBLOCK`, decides on the
//! `fstat` of the descriptor it opened (not on the path, which can change in between), and counts the bytes it
//! reads instead of trusting the size in the metadata. A reload reads the config on tokio's blocking pool (the
//! runtime thread answers /livez). Credential, key and assertion files are looked at on the runtime thread at
//! every request and read there when they changed (`credentials::read_file_bytes`), with the key parsed and the
//! assertion signed there too: it never waits on a FIFO or device (the open does not block and the descriptor's
//! `fstat` refuses them), and a local regular file costs microseconds (BENCHMARKS.md, "Cost of a signed request": a
//! whole request built in 4 µs with a secret file, 49 µs with ES256; RS256's 1.2 ms is the RSA signature).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most bytes a config file may have.
pub(crate) const CONFIG_LIMIT: u64 = 1024 * 1024;
/// The most bytes a client id, client secret or assertion file may have.
pub(crate) const CREDENTIAL_LIMIT: u64 = 64 * 1024;
/// The most bytes a CA bundle, client certificate or key file may have.
pub(crate) const PEM_LIMIT: u64 = 1024 * 1024;
/// The most bytes a warm-start state file may have.
pub(crate) const STATE_LIMIT: u64 = 64 * 1024;

/// The deepest nesting a YAML document may have before it is refused unparsed.
pub(crate) const YAML_MAX_DEPTH: usize = 64;

/// What a path turned out to be when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Symlink,
    Other,
}

impl FileKind {
    fn of(ft: std::fs::FileType) -> FileKind {
        if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "not a regular file",
        })
    }
}

/// Why a file was not read. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {kind}, not a regular file; refused", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{} is larger than {limit} bytes; refused", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    pub(crate) fn path(&self) -> &Path {
        match self {
            ReadError::Open { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Read { path, .. } => path,
        }
    }
}

/// Opens `path` for reading without blocking and returns the descriptor only if it is a regular file.
///
/// With `follow_symlinks` false the last component must not be a symlink (`O_NOFOLLOW`).
pub(crate) fn open_regular(path: &Path, follow_symlinks: bool) -> Result<File, ReadError> {
    open_regular_with_meta(path, follow_symlinks).map(|(file, _)| file)
}

/// [`open_regular`], also returning the `fstat` of the descriptor (the one that decided).
fn open_regular_with_meta(
    path: &Path,
    follow_symlinks: bool,
) -> Result<(File, std::fs::Metadata), ReadError> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    // A first look at the path spares opening a device at all (opening one can have effects); the fstat of the
    // descriptor below is what decides, since the path can be swapped in between.
    let look = if follow_symlinks {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    if let Ok(m) = &look {
        if !m.file_type().is_file() {
            return Err(ReadError::NotRegular {
                path: path.to_path_buf(),
                kind: FileKind::of(m.file_type()),
            });
        }
    }
    open_checked(path, flags, follow_symlinks)
}

/// The open and the `fstat` of the descriptor: the part that decides, whatever the path was a moment ago.
fn open_checked(
    path: &Path,
    flags: i32,
    follow_symlinks: bool,
) -> Result<(File, std::fs::Metadata), ReadError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        // ELOOP with O_NOFOLLOW: the last component is a symlink. ENXIO: a socket, or a FIFO/device without a peer.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) => {
            let kind = std::fs::symlink_metadata(path)
                .ok()
                .map(|m| FileKind::of(m.file_type()))
                .filter(|k| !follow_symlinks || *k != FileKind::Symlink);
            return Err(match kind {
                Some(kind) => ReadError::NotRegular {
                    path: path.to_path_buf(),
                    kind,
                },
                None => ReadError::Open {
                    path: path.to_path_buf(),
                    source: e,
                },
            });
        }
        Err(e) => {
            return Err(ReadError::Open {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let meta = file.metadata().map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        });
    }
    Ok((file, meta))
}

/// Reads at most `limit` bytes from `file`, counting them; more is an error, whatever the metadata said.
pub(crate) fn read_counted(mut file: File, path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a whole regular file of at most `limit` bytes. It never blocks on a FIFO or device; a small credential file
/// is read on the runtime thread (see the module doc for the measured cost), the config on reload off it.
pub(crate) fn read_bounded(
    path: &Path,
    limit: u64,
    follow_symlinks: bool,
) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path, follow_symlinks)?;
    read_counted(file, path, limit)
}

/// [`read_bounded`] (symlinks followed), also returning the metadata of the descriptor that was read: what the
/// bytes are, not what the path names a moment later.
pub(crate) fn read_bounded_with_meta(
    path: &Path,
    limit: u64,
) -> Result<(Vec<u8>, std::fs::Metadata), ReadError> {
    let (file, meta) = open_regular_with_meta(path, true)?;
    Ok((read_counted(file, path, limit)?, meta))
}

/// Reads the regular file `name` inside the open directory `dir` (never following a symlink at `name`, never
/// blocking), at most `limit` bytes; also returns its metadata (owner, mode) from the descriptor that was read.
/// `shown` is the path used in errors.
pub(crate) fn read_bounded_at(
    dir: &File,
    name: &std::ffi::OsStr,
    shown: &Path,
    limit: u64,
) -> Result<(Vec<u8>, std::fs::Metadata), ReadError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let open_err = |source: io::Error| ReadError::Open {
        path: shown.to_path_buf(),
        source,
    };
    let c = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| open_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let flags =
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NOFOLLOW;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) {
            // SAFETY: as above; `st` is written by the call before it is read.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc == 0 {
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFLNK => FileKind::Symlink,
                    libc::S_IFIFO => FileKind::Fifo,
                    libc::S_IFSOCK => FileKind::Socket,
                    libc::S_IFCHR => FileKind::CharDevice,
                    libc::S_IFBLK => FileKind::BlockDevice,
                    libc::S_IFDIR => FileKind::Directory,
                    _ => FileKind::Other,
                };
                return Err(ReadError::NotRegular {
                    path: shown.to_path_buf(),
                    kind,
                });
            }
        }
        return Err(open_err(e));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata().map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: shown.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        });
    }
    Ok((read_counted(file, shown, limit)?, meta))
}

/// Why a YAML document is refused before the parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum YamlRefused {
    #[error(
        "line {line}: the document is nested more than {max} levels deep; refused before parsing"
    )]
    TooDeep { line: usize, max: usize },
    /// An anchor (`&name`) or alias (`*name`): a config needs neither, and aliases to aliases expand to a document
    /// exponentially larger than the file (a 300 KB file to more than 1 GiB) while it is parsed.
    #[error("line {line} column {column}: `{sigil}{name}` is a YAML {what}; anchors and aliases are refused before parsing (expanding them can take memory out of all proportion to the file, and a config needs none): write the value out in full, and quote text that starts with `{sigil}`")]
    Alias {
        line: usize,
        column: usize,
        what: &'static str,
        sigil: char,
        name: String,
    },
}

/// Refuses YAML nested deeper than `max_depth`, and any anchor or alias, in one linear pass, before a parser spends
/// time, stack or memory on it.
///
/// Counts block nesting (indentation levels and `- ` / `? ` entries opened on one line) plus flow nesting
/// (`[` and `{`), skipping quoted scalars, comments and block scalars (`|`, `>`). It errs on the side of counting
/// more (a plain scalar such as `a[b` in flow context counts), never less, so a refused document may in rare
/// cases be a legal one nested close to the limit; no real config comes near 64 levels. An `&` or `*` where a node
/// starts (after the indentation, `- `, `? `, `: `, and in flow context `[`, `{`, `,`) is an anchor or alias; the
/// one place a legal document can have one there without meaning it is the continuation line of a multi-line
/// plain scalar, which the error tells how to quote.
pub(crate) fn yaml_precheck(text: &str, max_depth: usize) -> Result<(), YamlRefused> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow: usize = 0;
    // Inside a quoted scalar that continues on the next line: its closing quote.
    let mut quote: Option<u8> = None;
    // Inside a block scalar: its content is more indented than this.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let blank = b[indent..].iter().all(|c| c.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        let mut line_depth = 0;
        if quote.is_none() {
            if blank || b[indent] == b'#' {
                continue;
            }
            i = indent;
            if flow == 0 {
                while indents.last().is_some_and(|&top| top > indent) {
                    indents.pop();
                }
                if indents.last() != Some(&indent) {
                    indents.push(indent);
                }
            }
        }
        // Whether the next non-space character starts a node: after the indent, `- `, `? `, `: `, and in flow
        // context after `[`, `{`, `,` and `:`. Only there can a quote or a flow collection begin.
        let mut node_start = quote.is_none();
        let mut last_significant = 0u8;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                if c == b'\\' && q == b'"' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    last_significant = c;
                }
                i += 1;
                continue;
            }
            let prev_space = i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t';
            let next_space = b.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t');
            match c {
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                b'#' if prev_space => break,
                b'"' | b'\'' if node_start => {
                    quote = Some(c);
                    node_start = false;
                }
                b'-' | b'?' if node_start && flow == 0 && next_space => line_depth += 1,
                b':' if flow > 0 || next_space => node_start = true,
                b',' if flow > 0 => node_start = true,
                b'&' | b'*' if node_start => {
                    let name: String = line[i + 1..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && !",[]{}".contains(*c))
                        .filter(|c| !c.is_control())
                        .take(40)
                        .collect();
                    return Err(YamlRefused::Alias {
                        line: n + 1,
                        column: line[..i].chars().count() + 1,
                        what: if c == b'&' { "anchor" } else { "alias" },
                        sigil: c as char,
                        name,
                    });
                }
                // A tag comes before the node it decorates: skip it, the node may still start a flow.
                b'!' if node_start => {
                    while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                        i += 1;
                    }
                    continue;
                }
                // In flow context every bracket counts, even one inside a plain scalar: counting more is safe.
                b'[' | b'{' if node_start || flow > 0 => {
                    flow += 1;
                    node_start = true;
                    if indents.len() + line_depth + flow > max_depth {
                        return Err(YamlRefused::TooDeep {
                            line: n + 1,
                            max: max_depth,
                        });
                    }
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    node_start = false;
                }
                _ => node_start = false,
            }
            last_significant = c;
            i += 1;
        }
        if indents.len() + line_depth + flow > max_depth {
            return Err(YamlRefused::TooDeep {
                line: n + 1,
                max: max_depth,
            });
        }
        // `key: |`, `- >-`, `|2`: the lines below that are more indented are text, not structure.
        if quote.is_none() && flow == 0 {
            let code = line.split(" #").next().unwrap_or("").trim_end();
            let header = code
                .rsplit([' ', '\t'])
                .next()
                .unwrap_or("")
                .trim_end_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
            if (header == "|" || header == ">") && last_significant != 0 {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo does not keep the pointer.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    /// Runs `f` on a thread and fails the test if it does not return within 5 s (a FIFO read would block forever).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the read blocked")
    }

    #[test]
    fn a_normal_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_bounded(&p, 5, false).unwrap(), b"hello");
        assert_eq!(read_bounded(&p, 1024, true).unwrap(), b"hello");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 6]).unwrap();
        let e = read_bounded(&p, 5, false).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 5, .. }), "{e}");
        assert!(e.to_string().contains("larger than 5 bytes"), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        mkfifo(&p);
        for follow in [false, true] {
            let q = p.clone();
            let e = within_5s(move || read_bounded(&q, 1024, follow)).unwrap_err();
            assert!(
                matches!(
                    e,
                    ReadError::NotRegular {
                        kind: FileKind::Fifo,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
    }

    #[test]
    fn a_fifo_swapped_in_after_the_first_look_is_refused_by_fstat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        mkfifo(&p);
        // The descriptor check alone, as if the path had been a regular file at the first look.
        let e = within_5s(move || {
            open_checked(
                &p,
                libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                false,
            )
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn dev_zero_is_refused_though_its_size_is_zero() {
        let p = Path::new("/dev/zero");
        assert_eq!(std::fs::metadata(p).unwrap().len(), 0);
        let e = within_5s(move || read_bounded(p, 1024, true)).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: FileKind::CharDevice,
                    ..
                }
            ),
            "{e}"
        );
        // Even read directly, the count stops it.
        let f = File::open(p).unwrap();
        assert!(matches!(
            read_counted(f, p, 4096).unwrap_err(),
            ReadError::TooLarge { .. }
        ));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 1024, false).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn a_symlink_is_refused_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"other").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_bounded(&link, 1024, false).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(read_bounded(&link, 1024, true).unwrap(), b"other");
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let e = read_bounded(&p, 1024, false).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: FileKind::Socket,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn reads_inside_a_directory_handle_refuse_the_same_things() {
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink(dir.path().join("f"), dir.path().join("link")).unwrap();
        mkfifo(&dir.path().join("fifo"));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let at = |name: &str, limit| {
            read_bounded_at(
                &d,
                std::ffi::OsStr::new(name),
                &dir.path().join(name),
                limit,
            )
        };
        assert_eq!(at("f", 3).unwrap().0, b"abc");
        assert!(matches!(
            at("f", 2).unwrap_err(),
            ReadError::TooLarge { .. }
        ));
        for (name, kind) in [
            ("link", FileKind::Symlink),
            ("fifo", FileKind::Fifo),
            ("sub", FileKind::Directory),
        ] {
            match at(name, 10) {
                Err(ReadError::NotRegular { kind: k, .. }) => assert_eq!(k, kind, "{name}"),
                other => panic!("{name}: {:?}", other.map(|r| r.0)),
            }
        }
    }

    #[test]
    fn a_missing_file_is_an_open_error_naming_it() {
        let e = read_bounded(Path::new("/nonexistent/x"), 10, false).unwrap_err();
        assert!(matches!(e, ReadError::Open { .. }));
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
    }

    fn nested_flow(n: usize) -> String {
        format!("a: {}1{}\n", "[".repeat(n), "]".repeat(n))
    }

    fn nested_block(n: usize) -> String {
        (0..n)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>()
            + &"  ".repeat(n)
            + "v: 1\n"
    }

    #[test]
    fn yaml_nesting_table() {
        let config = "listen: \"[::]:8099\"\nlog: {format: json, level: info}\nrefresh:\n  window: [0.70, 0.85]\ntokens:\n  - name: a\n    params: {x: \"[[[[\"}\n    outputs:\n      - {path: /x, format: raw}\n";
        let cases: Vec<(&str, String, usize, bool)> = vec![
            ("a real config", config.into(), 64, true),
            ("an empty document", String::new(), 64, true),
            ("flow at the limit", nested_flow(63), 64, true),
            ("flow past the limit", nested_flow(64), 64, false),
            ("block at the limit", nested_block(63), 64, true),
            ("block past the limit", nested_block(64), 64, false),
            (
                "dashes on one line",
                format!("{}x\n", "- ".repeat(70)),
                64,
                false,
            ),
            (
                "brackets in quotes",
                format!("a: \"{}\"\nb: '{}'\n", "[".repeat(100), "{".repeat(100)),
                64,
                true,
            ),
            (
                "brackets in a comment",
                format!("a: 1 # {}\n# {}\n", "[".repeat(100), "{".repeat(100)),
                64,
                true,
            ),
            (
                "brackets in a block scalar",
                format!("a: |\n  {}\n  {}\nb: 1\n", "[".repeat(100), "{".repeat(100)),
                64,
                true,
            ),
            (
                "brackets in a plain scalar",
                format!("a: x{}\n", "[".repeat(100)),
                64,
                true,
            ),
            (
                "a tag before the flow",
                format!("a: !!seq {}1{}\n", "[".repeat(70), "]".repeat(70)),
                64,
                false,
            ),
            (
                "a JSON document",
                format!("{}\"x\"{}\n", "{\"a\": ".repeat(70), "}".repeat(70)),
                64,
                false,
            ),
            (
                "flow across lines",
                format!("a:\n{}\n1\n{}\n", "[\n".repeat(70), "]\n".repeat(70)),
                64,
                false,
            ),
            (
                "a multi-line quoted string",
                format!("a: \"x\n  {}\n  y\"\nb: 1\n", "[".repeat(100)),
                64,
                true,
            ),
        ];
        for (what, text, max, ok) in cases {
            let r = yaml_precheck(&text, max);
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
        }
    }

    #[test]
    fn anchors_and_aliases_are_refused_where_a_node_starts_and_only_there() {
        let refused = [
            ("a: &x 1\nb: *x\n", 1, 4, "`&x` is a YAML anchor"),
            ("a: 1\nb: *x\n", 2, 4, "`*x` is a YAML alias"),
            ("a:\n  - *x\n", 2, 5, "`*x` is a YAML alias"),
            ("a: [1, *x]\n", 1, 8, "`*x`"),
            ("a: {k: *x}\n", 1, 8, "`*x`"),
            ("<<: *base\n", 1, 5, "`*base`"),
            ("*k : v\n", 1, 1, "`*k`"),
            ("a: !!seq &x [1]\n", 1, 10, "`&x`"),
            ("a: \"x\n  y\" \nb: &q 1\n", 3, 4, "`&q`"),
            ("a:\n  &x\n  k: 1\n", 2, 3, "`&x`"),
        ];
        for (text, line, column, says) in refused {
            let e = yaml_precheck(text, YAML_MAX_DEPTH).unwrap_err();
            assert!(
                matches!(e, YamlRefused::Alias { line: l, column: c, .. } if l == line && c == column),
                "{text:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(says) && msg.contains("refused before parsing"),
                "{msg}"
            );
        }
        // Not a node's start: text inside scalars, quotes, comments and block scalars.
        for text in [
            "url: https://x/?a=1&b=2\n",
            "scope: read*write\n",
            "a: \"*x &y\"\nb: '*z'\n",
            "a: 1 # *x &y\n",
            "a: |\n  *x\n  &y\nb: 1\n",
            "a: [b*c, d&e]\n",
            "k:*v\n",
        ] {
            assert_eq!(yaml_precheck(text, YAML_MAX_DEPTH), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn a_150000_level_document_is_refused_fast_with_a_clear_error() {
        for text in [
            nested_flow(150_000),
            format!("{}x\n", "- ".repeat(150_000)),
            format!("{}1{}", "{a: ".repeat(150_000), "}".repeat(150_000)),
        ] {
            let t = Instant::now();
            let e = yaml_precheck(&text, YAML_MAX_DEPTH).unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            assert!(matches!(e, YamlRefused::TooDeep { line: 1, .. }), "{e}");
            assert!(e.to_string().contains("more than 64 levels"), "{e}");
        }
    }
}
