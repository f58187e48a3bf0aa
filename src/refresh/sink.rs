//! A token's sinks: its output files plus the hidden state file that lets a restart adopt a still-valid token.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::OutputConfig;
use crate::output::{self, render, render_record, write_atomic, WriteError};
use crate::token::token::TokenRecord;
use crate::token::Token;

/// A token found on disk is adopted only if at least this share of its lifetime is left before `refresh_time`.
pub const WARM_START_MIN_LEFT: f64 = 0.10;

#[derive(Debug)]
pub struct Sink {
    outputs: Vec<OutputConfig>,
    state_file: PathBuf,
    fingerprint: String,
}

pub const STATE_SUFFIX: &str = ".tv-state";

/// `.<first output name>.tv-state`, next to the first output, mode 0600.
pub fn state_file_for(first_output: &Path) -> PathBuf {
    let name = first_output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    first_output.with_file_name(format!(".{name}{STATE_SUFFIX}"))
}

impl Sink {
    pub fn new(outputs: Vec<OutputConfig>, fingerprint: String) -> Sink {
        let state_file = state_file_for(&outputs[0].path);
        for o in &outputs {
            output::remove_stale_temps(&o.path);
        }
        output::remove_stale_temps(&state_file);
        Sink {
            outputs,
            state_file,
            fingerprint,
        }
    }

    pub fn outputs(&self) -> &[OutputConfig] {
        &self.outputs
    }

    /// Writes every output, then the state file. With `only_if_changed`, files that already hold these bytes and mode are left alone.
    pub fn write(&self, token: &Token, only_if_changed: bool) -> Result<(), WriteError> {
        for o in &self.outputs {
            let bytes = render(o.format, token);
            if only_if_changed && same_file(&o.path, &bytes, o.mode, o.uid, o.gid) {
                continue;
            }
            write_atomic(&o.path, &bytes, o.mode, o.uid, o.gid)?;
        }
        let first = &self.outputs[0];
        let record = render_record(&TokenRecord::from_token(
            token,
            Some(self.fingerprint.clone()),
        ));
        if only_if_changed && same_file(&self.state_file, &record, 0o600, first.uid, first.gid) {
            return Ok(());
        }
        write_atomic(&self.state_file, &record, 0o600, first.uid, first.gid)
    }

    /// The token saved by an earlier run, if it was requested with the same settings and enough of it is left.
    pub fn load_warm(&self, now: SystemTime) -> Option<Token> {
        let mut bytes = Vec::new();
        std::fs::File::open(&self.state_file)
            .ok()?
            .take(64 * 1024)
            .read_to_end(&mut bytes)
            .ok()?;
        let record: TokenRecord = serde_json::from_slice(&bytes).ok()?;
        let (token, fp) = record.into_token()?;
        if fp.as_deref() != Some(self.fingerprint.as_str()) {
            return None;
        }
        let left = token.refresh_time().duration_since(now).ok()?;
        (left >= token.lifetime.mul_f64(WARM_START_MIN_LEFT)).then_some(token)
    }

    /// Deletes every output and the state file (`on_exit: remove`).
    pub fn remove_all(&self) {
        for p in self
            .outputs
            .iter()
            .map(|o| &o.path)
            .chain(std::iter::once(&self.state_file))
        {
            if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove an output on exit");
                }
            }
        }
    }
}

fn same_file(path: &Path, bytes: &[u8], mode: u32, uid: Option<u32>, gid: Option<u32>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    meta.len() == bytes.len() as u64
        && meta.permissions().mode() & 0o7777 == mode
        && uid.is_none_or(|u| u == meta.uid())
        && gid.is_none_or(|g| g == meta.gid())
        && std::fs::read(path).is_ok_and(|b| b == bytes)
}
