//! Where the client id and secret come from (inline, a mounted file, an environment variable), read fresh for every request.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

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

    /// Reads the value now. Files are opened by path each time, so a Kubernetes `..data` swap is seen at once.
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
    let bytes = fsread::read_bounded(path, CREDENTIAL_LIMIT, true).map_err(|e| match e {
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
