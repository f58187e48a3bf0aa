//! Output files: the four formats (raw, header, json, env) and the atomic writer that publishes them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use crate::config::Format;
use crate::config::OutputConfig;
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

pub fn render_record(rec: &TokenRecord) -> Vec<u8> {
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
pub struct WriteError {
    pub path: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

pub const TMP_MARK: &str = ".tv-tmp-";

/// Replaces `path` atomically: temp file in the same directory, write, mode and owner, fsync, rename, fsync the directory.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), WriteError> {
    let err = |step: &'static str| {
        move |source: io::Error| WriteError {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = parent(path);
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        create_dirs(dir, uid, gid).map_err(err("create the directory"))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}{TMP_MARK}{:016x}",
        rand::rng().random::<u64>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create a temporary file"))?;
        f.write_all(bytes).map_err(err("write"))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&f, uid, gid).map_err(err("set the owner"))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err("set the mode"))?;
        f.sync_all().map_err(err("flush to disk"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(err("rename into place"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // The rename is only durable once the directory entry is; a failure here leaves the new file in place.
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates the missing directories of `dir` with mode 0750, owned like the file, so its group can enter them.
fn create_dirs(dir: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
        .collect();
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o750).create(d) {
            Ok(()) => {
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::chown(d, uid, gid)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Writes one output for a token.
pub fn write_output(out: &OutputConfig, token: &Token) -> Result<(), WriteError> {
    write_atomic(
        &out.path,
        &render(out.format, token),
        out.mode,
        out.uid,
        out.gid,
    )
}

/// Removes temporary files a killed writer left next to `path`.
pub fn remove_stale_temps(path: &Path) {
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

/// Says whether `path` could be written now, without touching an existing file.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "{} is a directory; give a file path",
            path.display()
        ));
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
        return Err(format!(
            "{} is not a directory, so {} cannot be created",
            dir.display(),
            path.display()
        ));
    }
    let probe = dir.join(format!(
        ".token-vendor-check{TMP_MARK}{:016x}",
        rand::rng().random::<u64>()
    ));
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write in {}: {e}; mount a writable volume there (an emptyDir) or fix its permissions",
            dir.display()
        )),
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
            .contains("not a directory"));
        assert!(check_writable(dir.path())
            .unwrap_err()
            .contains("is a directory"));
    }
}
