//! What every fuzz target shares: a counting global allocator that bounds a parser's memory, and input helpers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

/// Counts the bytes live on this thread, and the most live since [`measure`] started, around the system allocator.
pub struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add(n);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every call is passed on unchanged to the system allocator; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Counted as the old and the new block both live, which a moving realloc briefly has.
            grow(new_size);
            shrink(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at once (beyond what was live before).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(base))
}

/// Panics (a libFuzzer crash) when `peak` exceeds `per_byte` times the input's size plus `constant` bytes.
pub fn assert_bounded(what: &str, peak: usize, input_len: usize, per_byte: usize, constant: usize) {
    let bound = per_byte * input_len + constant;
    assert!(
        peak <= bound,
        "{what}: allocated {peak} bytes at once for {input_len} bytes of input (bound {per_byte} x input + {constant})"
    );
}

/// A fixed "now" for the targets: 2027-01-15T08:00:00Z.
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Splits `data` at the first `sep`: `(before, after)`, or `(data, [])` without one.
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Whether `c` is a character that cleaned server text must never carry raw (what `sanitize` promises to escape).
pub fn forbidden_in_clean_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Panics if `text` carries a character [`forbidden_in_clean_text`].
pub fn assert_clean(what: &str, text: &str) {
    if let Some(c) = text.chars().find(|&c| forbidden_in_clean_text(c)) {
        panic!("{what}: a raw {c:?} in {text:?}");
    }
}

/// `s` with the hex digits of each `%XX` in lower case (written here apart from the code under test).
pub fn lower_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            let mut look = chars.clone();
            if let (Some(a), Some(b)) = (look.next(), look.next()) {
                if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() {
                    out.push(a.to_ascii_lowercase());
                    out.push(b.to_ascii_lowercase());
                    chars = look;
                }
            }
        }
    }
    out
}

/// Every run of `n` consecutive characters of `s` (none when it is shorter).
pub fn char_runs(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.windows(n).map(|w| w.iter().collect()).collect()
}

/// The redaction forms of `forms` with their lower-case-escape twins, and every `run`-character run of each: what
/// `redact` promises to leave nowhere.
pub fn promised(forms: &[String], run: usize) -> (Vec<String>, Vec<String>) {
    let mut all: Vec<String> = Vec::new();
    for f in forms {
        all.push(f.clone());
        all.push(lower_escapes(f));
    }
    let runs = all.iter().flat_map(|f| char_runs(f, run)).collect();
    (all, runs)
}

/// A `StateStore` in a fresh private temporary directory named for the target and this process; a target makes
/// it once (in a `OnceLock`) and reuses it for every input.
pub fn fresh_state_store(target: &str) -> token_vendor::fuzz_api::StateStore {
    let dir = std::env::temp_dir().join(format!("tv-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    token_vendor::fuzz_api::StateStore::new(&dir)
        .expect("warm start works in a fresh private directory")
}
