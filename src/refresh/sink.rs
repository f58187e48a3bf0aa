//! A token's sinks: its output files plus the authenticated warm-start state file that lets a restart adopt a still-valid token.
//!
//! The state is the one file whose content the sidecar trusts on its own word, so it must be one that only the
//! sidecar could have written:
//! - **Where.** In `state_dir` when configured (the chart mounts a sidecar-only volume), else next to the first
//!   output, but only when that directory is owned by our euid, is not group- or world-writable, and no output is
//!   owned by another uid (an app uid that owns the directory could plant files in it). Anywhere else warm start
//!   is off, said once. State and key files are ours (euid), mode 0600, never chowned to `outputs[].uid`.
//! - **Key.** The record is HMAC-SHA256'd with a random 32-byte key kept in that directory (`KEY_FILE`, 0600,
//!   created on first use). A key file, not the client secret: the secret may be inline, in an env variable, or
//!   readable by the app (a shared Secret), and a rotation would needlessly drop a valid token; the key file only
//!   needs the property we already demand of the directory. A new key (fresh volume) means nothing old is adopted.
//!   The MAC covers the config fingerprint too, so a record is bound to the settings it was requested with.
//! - **Checks.** A record is adopted only if its MAC is valid, its file is a regular file we own (opened with
//!   `O_NOFOLLOW|O_NONBLOCK`: a FIFO, device, directory or symlink is refused, never waited on), the fingerprint
//!   matches, `issued_at` is not after now + [`MAX_CLOCK_SKEW`], `refresh_time` is exactly what the reference rule
//!   gives for `issued_at` and the lifetime, the lifetime is within what a fresh response may have, the time left
//!   is no longer than the lifetime, and at least [`WARM_START_MIN_LEFT`] of it is left.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ring::hmac;

use crate::config::OutputConfig;
use crate::fsread::{self, ReadError};
use crate::output::{euid, render, render_record, Target, WriteError};
use crate::token::discovery::Cached;
use crate::token::token::{TokenRecord, MAX_LIFETIME};
use crate::token::Token;

/// A token found on disk is adopted only if at least this share of its lifetime is left before `refresh_time`.
pub(crate) const WARM_START_MIN_LEFT: f64 = 0.10;

/// How far in the future a saved `issued_at` may lie (clocks of restarts on one node agree to well within this).
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

pub(crate) const STATE_SUFFIX: &str = ".tv-state";

/// The MAC key's file in the state directory; ends in [`STATE_SUFFIX`] so the config watcher ignores it too.
pub const KEY_FILE: &str = ".token-vendor-key.tv-state";

/// The first line of a state file: this, a space, the hex MAC, a newline; the JSON record follows.
const MAGIC: &str = "token-vendor-state-v1";

/// The same for a discovery document; a different magic so neither record can pass for the other.
const DISCOVERY_MAGIC: &str = "token-vendor-discovery-v1";

/// Ends in [`STATE_SUFFIX`], so the config watcher ignores it like the token's state.
pub(crate) const DISCOVERY_SUFFIX: &str = ".discovery.tv-state";

/// Where a token's state lives and the key that authenticates it.
struct Store {
    file: Target,
    /// The issuer's discovery document (`issuer:` tokens only), sealed with the same key under its own magic.
    discovery: Target,
    key: hmac::Key,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.file.path())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct Sink {
    outputs: Vec<OutputConfig>,
    targets: Vec<Target>,
    /// `None`: warm start is off (said once when the sink was made).
    store: Option<Store>,
    fingerprint: String,
}

/// `.<first output name>.tv-state`, next to the first output, mode 0600.
pub(crate) fn state_file_for(first_output: &Path) -> PathBuf {
    let name = first_output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    first_output.with_file_name(format!(".{name}{STATE_SUFFIX}"))
}

/// The discovery document's file next to a token's state file: `x.tv-state` → `x.discovery.tv-state`.
pub(crate) fn discovery_file_for(state_file: &Path) -> PathBuf {
    let name = state_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(STATE_SUFFIX).unwrap_or(&name);
    state_file.with_file_name(format!("{stem}{DISCOVERY_SUFFIX}"))
}

/// Why a directory may not hold the state, `None` when it may.
fn unsafe_dir(meta: &std::fs::Metadata) -> Option<String> {
    if meta.uid() != euid() {
        Some(format!(
            "it is owned by uid {}, not by this process (uid {})",
            meta.uid(),
            euid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "it is writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// Why the MAC key in a state directory cannot be used: warm start is then off there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateKeyError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the key file {} is not a 32-byte file of this uid with mode 0600; remove it to start afresh", .0.display())]
    Unsafe(PathBuf),
    #[error("the system random generator failed")]
    Random,
}

/// Reads the key in `dir`, or creates it; `Err` says why warm start cannot be trusted there.
fn load_or_create_key(dir: &Target) -> Result<hmac::Key, StateKeyError> {
    let handle = dir.open_dir(None)?;
    let key_target = dir.clone();
    let shown = dir.path().to_path_buf();
    match fsread::read_bounded_at(&handle, key_target.name(), &shown, 32) {
        Ok((bytes, meta)) => {
            if meta.uid() != euid() || meta.mode() & 0o077 != 0 || bytes.len() != 32 {
                return Err(StateKeyError::Unsafe(shown));
            }
            Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
        }
        Err(ReadError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| StateKeyError::Random)?;
            // Written whole to a temporary name first and renamed, so a reader never sees half a key.
            key_target.write(&bytes, 0o600, None, None)?;
            Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
        }
        Err(e) => Err(e.into()),
    }
}

/// The state's location and key, or why there is none (logged once by the caller).
fn open_store(
    name: &str,
    outputs: &[OutputConfig],
    state_dir: Option<&Path>,
) -> Result<Store, (bool, String)> {
    let (dir, file) = match state_dir {
        Some(d) => (d.to_path_buf(), d.join(format!("{name}{STATE_SUFFIX}"))),
        None => {
            let first = &outputs[0].path;
            if let Some(o) = outputs.iter().find(|o| o.uid.is_some_and(|u| u != euid())) {
                return Err((false, format!(
                    "output {} is owned by uid {}, which could then plant a token next to it; set state_dir to a directory only this sidecar can write",
                    o.path.display(),
                    o.uid.unwrap_or_default()
                )));
            }
            let dir = match first.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (dir, state_file_for(first))
        }
    };
    let warn = state_dir.is_some();
    let key_target = Target::resolve(&dir.join(KEY_FILE)).map_err(|e| (warn, e.to_string()))?;
    // Created like an output directory would be (0750, or 0700 for a state_dir), then checked.
    if state_dir.is_some() && !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| (warn, format!("cannot create {}: {e}", dir.display())))?;
    }
    let owner = if state_dir.is_some() {
        (None, None)
    } else {
        (outputs[0].uid, outputs[0].gid)
    };
    let handle = key_target
        .open_dir(Some(owner))
        .map_err(|e| (warn, e.to_string()))?;
    let meta = handle.metadata().map_err(|e| (warn, e.to_string()))?;
    if let Some(why) = unsafe_dir(&meta) {
        let hint = if state_dir.is_some() {
            "give state_dir a directory only this sidecar's uid can write (it is created 0700 when missing)"
        } else {
            "set state_dir to a directory only this sidecar can write"
        };
        return Err((warn, format!("{}: {why}; {hint}", dir.display())));
    }
    let key = load_or_create_key(&key_target).map_err(|e| (warn, e.to_string()))?;
    let discovery =
        Target::resolve(&discovery_file_for(&file)).map_err(|e| (warn, e.to_string()))?;
    let file = Target::resolve(&file).map_err(|e| (warn, e.to_string()))?;
    Ok(Store {
        file,
        discovery,
        key,
    })
}

/// The bytes of a state file: magic, MAC over the fingerprint and the record, the record.
pub fn seal(key: &hmac::Key, fingerprint: &str, record: &[u8]) -> Vec<u8> {
    seal_as(MAGIC, key, fingerprint, record)
}

/// The bytes of a discovery record's file: [`seal`] under the discovery magic.
pub(crate) fn seal_discovery(key: &hmac::Key, fingerprint: &str, record: &[u8]) -> Vec<u8> {
    seal_as(DISCOVERY_MAGIC, key, fingerprint, record)
}

fn seal_as(magic: &str, key: &hmac::Key, fingerprint: &str, record: &[u8]) -> Vec<u8> {
    let tag = hmac::sign(key, &mac_input(magic, fingerprint, record));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(magic.len() + 66 + record.len());
    out.extend_from_slice(magic.as_bytes());
    out.push(b' ');
    for b in tag.as_ref() {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

fn mac_input(magic: &str, fingerprint: &str, record: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(record.len() + 64);
    m.extend_from_slice(magic.as_bytes());
    m.push(0);
    m.extend_from_slice(fingerprint.as_bytes());
    m.push(0);
    m.extend_from_slice(record);
    m
}

/// The record inside a state file whose MAC is valid for this key and fingerprint.
fn open_sealed<'a>(
    magic: &str,
    key: &hmac::Key,
    fingerprint: &str,
    bytes: &'a [u8],
) -> Option<&'a [u8]> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&bytes[..nl]).ok()?;
    let hex = head.strip_prefix(magic)?.strip_prefix(' ')?;
    if hex.len() != 64 {
        return None;
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let record = &bytes[nl + 1..];
    hmac::verify(key, &mac_input(magic, fingerprint, record), &tag).ok()?;
    Some(record)
}

/// The reasons a saved token is not adopted; the caller logs it once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No state file: the normal first start. Not logged.
    Missing,
    /// Warm start is off (said when the sink was made).
    Disabled,
    /// Refused for a reason worth a warning (a file someone else may have planted, a clock that moved).
    Suspect(String),
    /// Refused for an ordinary reason (other settings, too little left).
    Stale(String),
}

impl Sink {
    /// `name` is the token's name (the state file's name in `state_dir`); directories are resolved here, once.
    pub(crate) fn new(
        name: &str,
        outputs: Vec<OutputConfig>,
        fingerprint: String,
        state_dir: Option<&Path>,
    ) -> Sink {
        let targets: Vec<Target> = outputs
            .iter()
            .map(|o| {
                Target::resolve(&o.path).unwrap_or_else(|e| {
                    // A path without a file name, an unreadable ancestor, or a symbolic link planted since the config
                    // was checked: the writes walk the path as given without following any link, and report it.
                    tracing::warn!(token = %name, error = %e, "cannot resolve an output directory now; its writes will say why");
                    Target::unresolved(&o.path)
                })
            })
            .collect();
        for t in &targets {
            t.remove_stale_temps();
        }
        let store = match open_store(name, &outputs, state_dir) {
            Ok(s) => {
                s.file.remove_stale_temps();
                Some(s)
            }
            Err((true, why)) => {
                tracing::warn!(token = %name, problem = %why, "warm start is off: the saved-token state cannot be kept safely");
                None
            }
            Err((false, why)) => {
                tracing::info!(token = %name, problem = %why, "warm start is off: a restart requests a new token");
                None
            }
        };
        Sink {
            outputs,
            targets,
            store,
            fingerprint,
        }
    }

    #[cfg(test)]
    pub(crate) fn outputs(&self) -> &[OutputConfig] {
        &self.outputs
    }

    /// Where the state is kept, `None` when warm start is off.
    pub(crate) fn state_file(&self) -> Option<&Path> {
        self.store.as_ref().map(|s| s.file.path())
    }

    /// Writes every output, then the state file. With `only_if_changed`, files that already hold these bytes and mode are left alone.
    pub(crate) fn write(&self, token: &Token, only_if_changed: bool) -> Result<(), WriteError> {
        for (o, t) in self.outputs.iter().zip(&self.targets) {
            let bytes = render(o.format, token);
            if only_if_changed && t.holds(&bytes, o.mode, o.uid, o.gid) {
                continue;
            }
            t.write(&bytes, o.mode, o.uid, o.gid)?;
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        let record = render_record(&TokenRecord::from_token(
            token,
            Some(self.fingerprint.clone()),
        ));
        let sealed = seal(&store.key, &self.fingerprint, &record);
        if only_if_changed && store.file.holds(&sealed, 0o600, Some(euid()), None) {
            return Ok(());
        }
        store.file.write(&sealed, 0o600, None, None)
    }

    /// The token saved by an earlier run, if it passes every check (module docs); else why not, logged once here.
    pub(crate) fn load_warm(&self, now: SystemTime) -> Option<Token> {
        match self.check_warm(now) {
            Ok(t) => Some(t),
            Err(Refusal::Missing | Refusal::Disabled) => None,
            Err(Refusal::Suspect(why)) => {
                tracing::warn!(file = %self.state_file().unwrap_or(Path::new("")).display(), problem = %why, "ignored the saved token; requesting a new one");
                None
            }
            Err(Refusal::Stale(why)) => {
                tracing::info!(problem = %why, "not adopting the saved token; requesting a new one");
                None
            }
        }
    }

    /// Deletes every output and the state files (`on_exit: remove`).
    pub(crate) fn remove_all(&self) {
        let state = self.store.as_ref().map(|s| [&s.file, &s.discovery]);
        for t in self.targets.iter().chain(state.into_iter().flatten()) {
            if let Err(e) = t.remove() {
                if e.source.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %t.path().display(), error = %e, "could not remove an output on exit");
                }
            }
        }
    }

    /// Saves a discovery document (sealed like the token's state); nothing when warm start is off.
    pub(crate) fn save_discovery(&self, cached: &Cached) -> Result<(), WriteError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let record = serde_json::to_vec(cached).unwrap_or_default();
        let sealed = seal_discovery(&store.key, &self.fingerprint, &record);
        if sealed.len() as u64 > fsread::STATE_LIMIT {
            // It could not be read back; a document this large is used only for this run.
            tracing::info!(
                file = %store.discovery.path().display(),
                "the discovery document is too large to keep for a restart"
            );
            return Ok(());
        }
        store.discovery.write(&sealed, 0o600, None, None)
    }

    /// The discovery document saved by an earlier run, under the same rules as the token's state: our file, mode
    /// 0600, a valid MAC for this key and these settings, fetched no later than now (within [`MAX_CLOCK_SKEW`]).
    /// Whether it is for the configured issuer is for the token client to say.
    pub(crate) fn load_discovery(&self, now: SystemTime) -> Option<Cached> {
        match self.check_discovery(now) {
            Ok(c) => Some(c),
            Err(Refusal::Missing | Refusal::Disabled) => None,
            Err(Refusal::Suspect(why) | Refusal::Stale(why)) => {
                let file = self
                    .store
                    .as_ref()
                    .map(|s| s.discovery.path().display().to_string());
                tracing::warn!(file = file.unwrap_or_default(), problem = %why, "ignored the saved discovery document");
                None
            }
        }
    }

    /// [`Sink::load_discovery`] without the log line.
    pub(crate) fn check_discovery(&self, now: SystemTime) -> Result<Cached, Refusal> {
        let store = self.store.as_ref().ok_or(Refusal::Disabled)?;
        let bytes = read_own(&store.discovery)?;
        let record = open_sealed(DISCOVERY_MAGIC, &store.key, &self.fingerprint, &bytes)
            .ok_or_else(|| {
                Refusal::Suspect(
                    "the saved discovery document does not carry a valid MAC for this sidecar's key and settings".into(),
                )
            })?;
        let cached: Cached = serde_json::from_slice(record)
            .map_err(|_| Refusal::Suspect("the saved discovery record is not valid JSON".into()))?;
        if cached.fetched_at() > now + MAX_CLOCK_SKEW {
            return Err(Refusal::Suspect(
                "the saved discovery document was fetched in the future".into(),
            ));
        }
        Ok(cached)
    }

    /// [`Sink::load_warm`] without the log line.
    pub(crate) fn check_warm(&self, now: SystemTime) -> Result<Token, Refusal> {
        let store = self.store.as_ref().ok_or(Refusal::Disabled)?;
        let suspect = |s: String| Refusal::Suspect(s);
        let bytes = read_own(&store.file)?;
        let record = open_sealed(MAGIC, &store.key, &self.fingerprint, &bytes).ok_or_else(|| {
            suspect(
                "the state file does not carry a valid MAC for this sidecar's key and settings (written by someone else, or for other settings)".into(),
            )
        })?;
        let rec: TokenRecord = serde_json::from_slice(record)
            .map_err(|_| suspect("the state record is not valid JSON".into()))?;
        let saved_refresh = humantime::parse_rfc3339(&rec.refresh_time).ok();
        let expires_in = rec.expires_in;
        let (token, fp) = rec
            .into_token()
            .ok_or_else(|| suspect("the state record's token or times are unusable".into()))?;
        if fp.as_deref() != Some(self.fingerprint.as_str()) {
            return Err(Refusal::Stale(
                "the saved token was requested with other settings".into(),
            ));
        }
        validate_times(&token, saved_refresh, expires_in, now)?;
        Ok(token)
    }
}

/// The bytes of a sealed file if it is a regular file of our uid with mode 0600 (never waiting on a FIFO).
fn read_own(file: &Target) -> Result<Vec<u8>, Refusal> {
    let suspect = |s: String| Refusal::Suspect(s);
    let dir = match file.open_dir(None) {
        Ok(d) => d,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Missing),
        Err(e) => return Err(suspect(e.to_string())),
    };
    let (bytes, meta) =
        match fsread::read_bounded_at(&dir, file.name(), file.path(), fsread::STATE_LIMIT) {
            Ok(r) => r,
            Err(ReadError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(Refusal::Missing)
            }
            Err(e) => return Err(suspect(e.to_string())),
        };
    if meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(suspect(format!(
            "the state file is owned by uid {} with mode {:04o}; only a 0600 file of uid {} is trusted",
            meta.uid(),
            meta.mode() & 0o7777,
            euid()
        )));
    }
    Ok(bytes)
}

/// The time checks of a saved token against the reference rules and `now`.
pub(crate) fn validate_times(
    token: &Token,
    saved_refresh: Option<SystemTime>,
    expires_in: f64,
    now: SystemTime,
) -> Result<(), Refusal> {
    let suspect = |s: &str| Err(Refusal::Suspect(s.to_string()));
    if token.lifetime.is_zero() || token.lifetime > MAX_LIFETIME {
        return suspect("the saved lifetime is outside what a token response may give");
    }
    if (expires_in - token.lifetime.as_secs_f64()).abs() > 0.002 {
        return suspect("the saved expires_in does not match issued_at and expires_at");
    }
    if token.issued_at > now + MAX_CLOCK_SKEW {
        return suspect("the saved token was issued in the future (was the clock stepped back?)");
    }
    let consistent = saved_refresh.is_some_and(|r| {
        let want = token.refresh_time();
        let diff = r.duration_since(want).unwrap_or_else(|e| e.duration());
        diff <= Duration::from_millis(2)
    });
    if !consistent {
        return suspect(
            "the saved refresh_time is not issued_at + expires_in - the reference buffer",
        );
    }
    let left = token.refresh_time().duration_since(now).unwrap_or_default();
    if left > token.lifetime {
        return suspect("the saved token has more time left than its whole lifetime");
    }
    if left < token.lifetime.mul_f64(WARM_START_MIN_LEFT) {
        return Err(Refusal::Stale(format!(
            "only {} of the saved token's validity is left",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;
    use crate::token::LifetimeSource;
    use secrecy::SecretString;
    use std::os::unix::ffi::OsStrExt;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn token(issued_at: SystemTime, lifetime: Duration) -> Token {
        Token {
            access_token: SecretString::from("genuine-token".to_string()),
            issued_at,
            lifetime,
            scope: None,
            lifetime_source: LifetimeSource::ExpiresIn,
        }
    }

    fn outputs(dir: &Path) -> Vec<OutputConfig> {
        vec![OutputConfig {
            path: dir.join("out/token"),
            format: Format::Raw,
            mode: 0o640,
            uid: None,
            gid: None,
        }]
    }

    /// A sink with a state_dir, the token written by it, and the state file's path.
    fn written(lifetime: Duration) -> (tempfile::TempDir, Sink, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new(
            "svc",
            outputs(dir.path()),
            "fp".into(),
            Some(&dir.path().join("state")),
        );
        sink.write(&token(now(), lifetime), false).unwrap();
        let file = dir.path().join("state/svc.tv-state");
        assert!(file.exists());
        (dir, sink, file)
    }

    fn key(dir: &Path) -> hmac::Key {
        let bytes = std::fs::read(dir.join("state").join(KEY_FILE)).unwrap();
        hmac::Key::new(hmac::HMAC_SHA256, &bytes)
    }

    /// A record for the planted token, sealed with `key` (or with a made-up MAC when `None`).
    fn plant(file: &Path, key: Option<&hmac::Key>, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut rec = serde_json::to_value(TokenRecord::from_token(
            &{
                let mut t = token(now(), Duration::from_secs(3600));
                t.access_token = SecretString::from("planted-token".to_string());
                t
            },
            Some("fp".into()),
        ))
        .unwrap();
        edit(&mut rec);
        let bytes = serde_json::to_vec(&rec).unwrap();
        let sealed = match key {
            Some(k) => seal(k, "fp", &bytes),
            None => [format!("{MAGIC} {}\n", "ab".repeat(32)).as_bytes(), &bytes].concat(),
        };
        let _ = std::fs::remove_file(file);
        std::fs::write(file, sealed).unwrap();
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    fn refused(sink: &Sink) -> Refusal {
        match sink.check_warm(now()) {
            Ok(t) => panic!("adopted {:?}", t.secret()),
            Err(r) => r,
        }
    }

    #[test]
    fn a_genuine_record_is_adopted() {
        let (_d, sink, file) = written(Duration::from_secs(3600));
        assert_eq!(sink.check_warm(now()).unwrap().secret(), "genuine-token");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), euid());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(MAGIC), "{text}");
    }

    #[test]
    fn a_record_without_a_valid_mac_is_refused() {
        let (_d, sink, file) = written(Duration::from_secs(3600));
        plant(&file, None, |_| {});
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("MAC")));
        // The genuine bytes with one changed character of the token.
        let (_d, sink, file) = written(Duration::from_secs(3600));
        let t = std::fs::read_to_string(&file)
            .unwrap()
            .replace("genuine", "genuinE");
        std::fs::write(&file, t).unwrap();
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("MAC")));
        // Sealed with another key.
        let (_d, sink, file) = written(Duration::from_secs(3600));
        plant(
            &file,
            Some(&hmac::Key::new(hmac::HMAC_SHA256, &[7; 32])),
            |_| {},
        );
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("MAC")));
    }

    #[test]
    fn a_record_issued_in_the_future_is_refused() {
        let (d, sink, file) = written(Duration::from_secs(3600));
        let later = now() + Duration::from_secs(60);
        let k = key(d.path());
        let t = token(later, Duration::from_secs(3600));
        let rec = TokenRecord::from_token(&t, Some("fp".into()));
        plant(&file, Some(&k), |v| {
            *v = serde_json::to_value(&rec).unwrap()
        });
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("future")));
        // Within the skew allowance it is fine.
        let t = token(now() + Duration::from_secs(2), Duration::from_secs(3600));
        let rec = TokenRecord::from_token(&t, Some("fp".into()));
        plant(&file, Some(&k), |v| {
            *v = serde_json::to_value(&rec).unwrap()
        });
        assert!(sink.check_warm(now()).is_ok());
    }

    #[test]
    fn a_record_with_a_lifetime_of_years_or_inconsistent_times_is_refused() {
        let (d, sink, file) = written(Duration::from_secs(3600));
        let k = key(d.path());
        let years = token(now(), MAX_LIFETIME + Duration::from_secs(86400));
        let rec = TokenRecord::from_token(&years, Some("fp".into()));
        plant(&file, Some(&k), |v| {
            *v = serde_json::to_value(&rec).unwrap()
        });
        assert!(matches!(refused(&sink), Refusal::Suspect(_)));
        // refresh_time moved a day later than the rule gives.
        plant(&file, Some(&k), |v| {
            let t: SystemTime =
                humantime::parse_rfc3339(v["refresh_time"].as_str().unwrap()).unwrap();
            v["refresh_time"] = crate::token::token::rfc3339(t + Duration::from_secs(86400)).into();
        });
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("refresh_time")));
        // expires_in that does not match the two times.
        plant(&file, Some(&k), |v| v["expires_in"] = 99999.0.into());
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("expires_in")));
    }

    #[test]
    fn more_time_left_than_the_lifetime_is_refused() {
        let t = token(now() + Duration::from_secs(4), Duration::from_secs(3));
        // refresh_time = issued + 3 - 1 = now + 6 s; lifetime 3 s.
        let refresh = Some(t.refresh_time());
        let r = validate_times(&t, refresh, 3.0, now());
        assert!(
            matches!(&r, Err(Refusal::Suspect(w)) if w.contains("whole lifetime")),
            "{r:?}"
        );
    }

    #[test]
    fn other_settings_or_little_time_left_are_stale_not_suspect() {
        let (d, sink, file) = written(Duration::from_secs(3600));
        let other = Sink::new(
            "svc",
            outputs(d.path()),
            "other-fp".into(),
            Some(&d.path().join("state")),
        );
        // Sealed for "fp": under another fingerprint the MAC does not verify either.
        assert!(matches!(refused(&other), Refusal::Suspect(_)));
        let k = key(d.path());
        let old = token(now() - Duration::from_secs(3500), Duration::from_secs(3600));
        let rec = TokenRecord::from_token(&old, Some("fp".into()));
        plant(&file, Some(&k), |v| {
            *v = serde_json::to_value(&rec).unwrap()
        });
        assert!(matches!(refused(&sink), Refusal::Stale(_)));
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_a_directory_or_a_symlink_at_the_state_path_is_refused_without_blocking() {
        for what in ["fifo", "dir", "symlink", "devzero"] {
            let (d, sink, file) = written(Duration::from_secs(3600));
            let genuine = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            match what {
                "fifo" => mkfifo(&file),
                "dir" => std::fs::create_dir(&file).unwrap(),
                "devzero" => std::os::unix::fs::symlink("/dev/zero", &file).unwrap(),
                _ => {
                    // A symlink to a file holding the genuine record: still refused, symlinks are never followed.
                    let elsewhere = d.path().join("elsewhere");
                    std::fs::write(&elsewhere, &genuine).unwrap();
                    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let sink = std::sync::Arc::new(sink);
            let s2 = sink.clone();
            std::thread::spawn(move || tx.send(s2.check_warm(now()).err()));
            let r = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{what}: blocked"));
            assert!(
                matches!(&r, Some(Refusal::Suspect(w)) if w.contains("not a regular file")),
                "{what}: {r:?}"
            );
        }
    }

    #[test]
    fn a_state_dir_or_key_someone_else_could_write_turns_warm_start_off() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let sink = Sink::new("svc", outputs(dir.path()), "fp".into(), Some(&open));
        assert!(sink.state_file().is_none());
        sink.write(&token(now(), Duration::from_secs(3600)), false)
            .unwrap();
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
        assert_eq!(sink.check_warm(now()).unwrap_err(), Refusal::Disabled);
        // A key file that is readable by others.
        let st = dir.path().join("st");
        let sink = Sink::new("svc", outputs(dir.path()), "fp".into(), Some(&st));
        assert!(sink.state_file().is_some());
        std::fs::set_permissions(
            st.join(KEY_FILE),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let sink = Sink::new("svc", outputs(dir.path()), "fp".into(), Some(&st));
        assert!(sink.state_file().is_none());
    }

    #[test]
    fn without_state_dir_the_output_directory_is_used_only_when_it_is_ours_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::new("svc", outputs(dir.path()), "fp".into(), None);
        assert_eq!(
            sink.state_file(),
            Some(dir.path().join("out/.token.tv-state").as_path())
        );
        sink.write(&token(now(), Duration::from_secs(3600)), false)
            .unwrap();
        assert!(sink.check_warm(now()).is_ok());
        // A group-writable output directory.
        std::fs::set_permissions(
            dir.path().join("out"),
            std::os::unix::fs::PermissionsExt::from_mode(0o770),
        )
        .unwrap();
        let sink = Sink::new("svc", outputs(dir.path()), "fp".into(), None);
        assert!(sink.state_file().is_none());
        // An output owned by another uid.
        std::fs::set_permissions(
            dir.path().join("out"),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        let mut outs = outputs(dir.path());
        outs[0].uid = Some(euid().wrapping_add(1));
        let sink = Sink::new("svc", outs, "fp".into(), None);
        assert!(sink.state_file().is_none());
    }

    #[test]
    fn a_new_key_adopts_nothing_old() {
        let (d, sink, _file) = written(Duration::from_secs(3600));
        assert!(sink.check_warm(now()).is_ok());
        std::fs::remove_file(d.path().join("state").join(KEY_FILE)).unwrap();
        let sink = Sink::new(
            "svc",
            outputs(d.path()),
            "fp".into(),
            Some(&d.path().join("state")),
        );
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("MAC")));
    }

    /// Root only: a state file chowned to another uid (as `outputs[].uid` once owned it) is refused even with a valid MAC.
    #[test]
    #[ignore = "needs root"]
    fn a_record_owned_by_another_uid_is_refused() {
        let (_d, sink, file) = written(Duration::from_secs(3600));
        std::os::unix::fs::chown(&file, Some(65532), Some(65532)).unwrap();
        assert!(matches!(refused(&sink), Refusal::Suspect(w) if w.contains("owned by uid 65532")));
    }

    fn cached(fetched_at: SystemTime) -> Cached {
        let issuer = crate::token::discovery::Issuer::parse("https://idp.example/r").unwrap();
        let source =
            url::Url::parse("https://idp.example/r/.well-known/openid-configuration").unwrap();
        let body =
            br#"{"issuer":"https://idp.example/r","token_endpoint":"https://idp.example/r/token"}"#;
        Cached {
            document: crate::token::discovery::Document::parse(body, &issuer, &source).unwrap(),
            fetched_at: fetched_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        }
    }

    #[test]
    fn a_discovery_document_is_sealed_apart_and_adopted_only_under_the_same_rules() {
        let (d, sink, token_file) = written(Duration::from_secs(3600));
        let file = d.path().join("state/svc.discovery.tv-state");
        assert_eq!(discovery_file_for(&token_file), file);
        assert_eq!(sink.check_discovery(now()), Err(Refusal::Missing));
        let c = cached(now());
        sink.save_discovery(&c).unwrap();
        assert_eq!(sink.check_discovery(now()).unwrap(), c);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, euid()));
        // The token's record is untouched and still adopted.
        assert!(sink.check_warm(now()).is_ok());

        let k = key(d.path());
        let record = serde_json::to_vec(&c).unwrap();
        let put = |bytes: Vec<u8>| {
            let _ = std::fs::remove_file(&file);
            std::fs::write(&file, bytes).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        };
        // Sealed as a token record (other magic), with another key, or for other settings: refused.
        for sealed in [
            seal(&k, "fp", &record),
            seal_as(
                DISCOVERY_MAGIC,
                &hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]),
                "fp",
                &record,
            ),
            seal_as(DISCOVERY_MAGIC, &k, "other-fp", &record),
        ] {
            put(sealed);
            assert!(
                matches!(sink.check_discovery(now()), Err(Refusal::Suspect(w)) if w.contains("MAC"))
            );
        }
        // Fetched in the future: refused; within the skew allowance: fine.
        put(seal_as(
            DISCOVERY_MAGIC,
            &k,
            "fp",
            &serde_json::to_vec(&cached(now() + Duration::from_secs(60))).unwrap(),
        ));
        assert!(
            matches!(sink.check_discovery(now()), Err(Refusal::Suspect(w)) if w.contains("future"))
        );
        put(seal_as(DISCOVERY_MAGIC, &k, "fp", &record));
        assert!(sink.check_discovery(now()).is_ok());
        // A file that is not 0600 is not trusted.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(
            matches!(sink.check_discovery(now()), Err(Refusal::Suspect(w)) if w.contains("0600"))
        );
        sink.remove_all();
        assert!(!file.exists());
    }
}
