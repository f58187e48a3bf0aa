//! Paused-clock tests of the refresher loop against a scripted vendor: hours of schedule in milliseconds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use secrecy::SecretString;

use super::*;
use crate::config::OutputConfig;
use crate::output::Format;
use crate::token::LifetimeSource;

#[derive(Clone)]
enum Step {
    Issue(Duration),
    Fail(ErrorKind, Option<Duration>),
}

#[derive(Clone, Default)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    rotated: Arc<AtomicBool>,
    serial: Arc<Mutex<u32>>,
}

impl Script {
    fn new(steps: impl IntoIterator<Item = Step>) -> Script {
        let s = Script::default();
        s.steps.lock().unwrap().extend(steps);
        s
    }
    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl Vend for Script {
    async fn vend(&self, issued_at: SystemTime) -> Result<Token, FetchError> {
        self.calls.lock().unwrap().push(Instant::now());
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Issue(Duration::from_secs(100)));
        match step {
            Step::Issue(lifetime) => {
                let mut n = self.serial.lock().unwrap();
                *n += 1;
                Ok(Token {
                    access_token: SecretString::from(format!("tok-{n}")),
                    issued_at,
                    lifetime,
                    scope: None,
                    lifetime_source: LifetimeSource::ExpiresIn,
                })
            }
            Step::Fail(kind, retry_after) => Err(FetchError {
                kind,
                message: format!("scripted {kind}"),
                retry_after,
            }),
        }
    }
    fn credentials_changed(&self) -> bool {
        self.rotated.swap(false, Ordering::SeqCst)
    }
}

struct Rig {
    state: Arc<State>,
    sink: Arc<Sink>,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let outputs = vec![OutputConfig {
        path: dir.path().join("token"),
        format: Format::Raw,
        mode: 0o640,
        uid: None,
        gid: None,
    }];
    let state = State::new(Clock::virtual_at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    state.register("t", "http://test/token".into());
    Rig {
        state,
        sink: Arc::new(Sink::new("t", outputs, "fp".into(), None)),
        _dir: dir,
    }
}

fn refresher(r: &Rig, script: &Script, policy: RefreshPolicy) -> Refresher<Script> {
    Refresher::new(
        "t".into(),
        script.clone(),
        r.sink.clone(),
        policy,
        r.state.clone(),
        Arc::new(Metrics::new()),
        Duration::from_secs(30),
        Some(7),
    )
}

fn spawn(r: Refresher<Script>) -> (Arc<Remote>, tokio::task::JoinHandle<()>) {
    let remote = Arc::new(Remote::default());
    let h = tokio::spawn(r.run(remote.clone()));
    (remote, h)
}

fn gaps(calls: &[Instant]) -> Vec<f64> {
    calls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn refreshes_land_inside_the_window_and_readiness_never_drops() {
    let r = rig();
    let script = Script::new([]);
    let (stop, h) = spawn(refresher(&r, &script, RefreshPolicy::default()));
    // 100 s tokens: buffer 10 s, so refresh_time is 90 s after issue; the window is 63 s .. 76.5 s.
    let start = Instant::now();
    for _ in 0..2000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Instant::now() > start + Duration::from_millis(1) {
            assert!(
                r.state.readiness().ready,
                "not ready at {:?}",
                Instant::now() - start
            );
        }
    }
    stop.stop();
    h.await.unwrap();
    let g = gaps(&script.calls());
    assert!(g.len() >= 12, "{g:?}");
    for x in &g {
        assert!(
            (63.0..=76.5).contains(x),
            "refresh outside the window: {x} in {g:?}"
        );
    }
    // Jitter: the gaps are not all the same.
    let (min, max) = g
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(max - min > 3.0, "{g:?}");
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_and_readiness_flips_exactly_at_refresh_time() {
    let r = rig();
    let mut steps = vec![Step::Issue(Duration::from_secs(100))];
    steps.extend(std::iter::repeat_n(
        Step::Fail(ErrorKind::ServerError, None),
        200,
    ));
    let script = Script::new(steps);
    let (stop, h) = spawn(refresher(&r, &script, RefreshPolicy::default()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let issued = script.calls()[0];
    let refresh_time = issued + Duration::from_secs(90);
    tokio::time::sleep_until(refresh_time - Duration::from_millis(1)).await;
    assert!(
        r.state.readiness().ready,
        "must stay ready while valid() holds"
    );
    tokio::time::sleep_until(refresh_time).await;
    tokio::task::yield_now().await;
    let rd = r.state.readiness();
    assert!(!rd.ready, "must not be ready at refresh_time");
    assert!(rd.tokens["t"]
        .reason
        .as_deref()
        .unwrap()
        .contains("server_error"));
    tokio::time::sleep(Duration::from_secs(600)).await;
    stop.stop();
    h.await.unwrap();

    let calls = script.calls();
    let before: Vec<_> = calls.iter().filter(|c| **c < refresh_time).collect();
    // The last attempt before refresh_time is at most one second before it.
    let last = **before.last().unwrap();
    assert!(
        refresh_time - last <= Duration::from_secs(1),
        "{:?}",
        refresh_time - last
    );
    // The final chance comes just before refresh_time.
    assert!(
        refresh_time - last <= schedule::FINAL_CHANCE,
        "{:?}",
        refresh_time - last
    );
    // Every retry waits at most max_backoff, and at least min_backoff but for the last chances: the one a second
    // before refresh_time and the final one just before it.
    let mut short = 0;
    for (i, g) in gaps(&calls).iter().enumerate().skip(1) {
        assert!(*g <= 60.0 + 1e-9, "gap {i}: {g}");
        if *g < 1.0 - 1e-9 {
            short += 1;
            assert!(
                refresh_time.saturating_duration_since(calls[i + 1]) < Duration::from_secs(1),
                "gap {i}: {g} outside the last second"
            );
        }
    }
    assert!(short <= 2, "{short} gaps shorter than min_backoff");
    // Bounded: over ~10 minutes of outage, far fewer than one attempt per second.
    assert!(calls.len() < 60, "{} attempts", calls.len());
    assert_eq!(
        r.state.snapshot()["t"].consecutive_failures as usize,
        calls.len() - 1
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let r = rig();
    let script = Script::new([
        Step::Fail(ErrorKind::RateLimited, Some(Duration::from_secs(40))),
        Step::Fail(ErrorKind::ServerError, Some(Duration::from_secs(25))),
    ]);
    let (stop, h) = spawn(refresher(&r, &script, RefreshPolicy::default()));
    tokio::time::sleep(Duration::from_secs(100)).await;
    stop.stop();
    h.await.unwrap();
    let g = gaps(&script.calls());
    assert!(
        (40.0..41.0).contains(&g[0]) && (25.0..26.0).contains(&g[1]),
        "{g:?}"
    );
    assert!(r.state.readiness().ready);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_wait_max_backoff_unless_the_secret_rotated() {
    let r = rig();
    let script = Script::new(std::iter::repeat_n(
        Step::Fail(ErrorKind::InvalidClient, None),
        20,
    ));
    let (stop, h) = spawn(refresher(&r, &script, RefreshPolicy::default()));
    tokio::time::sleep(Duration::from_secs(301)).await;
    let g = gaps(&script.calls());
    assert_eq!(g.len(), 5, "{g:?}");
    assert!(g.iter().all(|x| (*x - 60.0).abs() < 1e-6), "{g:?}");
    // A rotation seen by the watcher: the next attempt comes after min_backoff, not max_backoff.
    script.rotated.store(true, Ordering::SeqCst);
    stop.wake();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = script.calls();
    assert_eq!(calls.len(), 7, "{:?}", gaps(&calls));
    stop.stop();
    h.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_warm_restart_adopts_the_saved_token_without_a_request() {
    let r = rig();
    let script = Script::new([Step::Issue(Duration::from_secs(1000))]);
    let mut first = refresher(&r, &script, RefreshPolicy::default());
    assert!(matches!(
        first.refresh_once().await,
        Outcome::Refreshed { .. }
    ));
    assert_eq!(script.calls().len(), 1);
    tokio::time::sleep(Duration::from_secs(100)).await;

    let state2 = State::new(*r.state.clock());
    state2.register("t", "x".into());
    let rig2 = Rig {
        state: state2,
        sink: r.sink.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let script2 = Script::new([Step::Issue(Duration::from_secs(1000))]);
    let (stop, h) = spawn(refresher(&rig2, &script2, RefreshPolicy::default()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        rig2.state.readiness().ready,
        "adopted token must make us ready at once"
    );
    assert!(script2.calls().is_empty(), "no request on a warm start");
    // The planned refresh still happens inside the window of the adopted token (630 s .. 765 s after issue).
    tokio::time::sleep(Duration::from_secs(700)).await;
    stop.stop();
    h.await.unwrap();
    assert_eq!(script2.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_at_once_restart_requests_at_once_even_with_a_token_to_adopt() {
    let r = rig();
    let script = Script::new([Step::Issue(Duration::from_secs(1000))]);
    let mut first = refresher(&r, &script, RefreshPolicy::default());
    first.refresh_once().await;
    tokio::time::sleep(Duration::from_secs(100)).await;

    let script2 = Script::new([Step::Issue(Duration::from_secs(1000))]);
    let (stop, h) = spawn(refresher(&r, &script2, RefreshPolicy::default()).at_once());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        script2.calls().len(),
        1,
        "new TLS files after a failure are tried at once, not at the adopted token's planned refresh"
    );
    stop.stop();
    h.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_token_with_little_life_left_is_not_adopted() {
    let r = rig();
    let script = Script::new([Step::Issue(Duration::from_secs(100))]);
    let mut first = refresher(&r, &script, RefreshPolicy::default());
    first.refresh_once().await;
    // 90 s to refresh_time; 10% of 100 s is 10 s. At 85 s only 5 s are left.
    tokio::time::sleep(Duration::from_secs(85)).await;
    assert!(r.sink.load_warm(r.state.clock().wall()).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_keeps_the_old_token_and_counts_as_a_failure() {
    let r = rig();
    let script = Script::new([
        Step::Issue(Duration::from_secs(100)),
        Step::Issue(Duration::from_secs(100)),
    ]);
    let mut rf = refresher(&r, &script, RefreshPolicy::default());
    rf.refresh_once().await;
    let path = r.sink.outputs()[0].path.clone();
    assert_eq!(std::fs::read(&path).unwrap(), b"tok-1");
    // Make the rename fail: the target becomes a non-empty directory.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"").unwrap();
    match rf.refresh_once().await {
        Outcome::Failed { error, .. } => assert_eq!(error.kind, ErrorKind::OutputWrite),
        o => panic!("{o:?}"),
    }
    assert!(r.state.readiness().ready, "the old token is still valid");
    // Checked after the failed write: the refresher keeps the token it had, and a restart would adopt it, not the one
    // that was never written.
    let kept = rf
        .current
        .as_ref()
        .map(|t| t.access_token.expose_secret().to_string());
    assert_eq!(kept.as_deref(), Some("tok-1"));
    let saved = r.sink.load_warm(r.state.clock().wall());
    assert_eq!(
        saved
            .map(|t| t.access_token.expose_secret().to_string())
            .as_deref(),
        Some("tok-1")
    );
}

/// Real clock: file jobs run on the `tv-files-N` threads, every one completes and returns its value, and more jobs
/// than threads wait their turn instead of being lost (a queue that woke no thread would hang here).
#[tokio::test]
async fn file_jobs_run_on_the_file_threads_and_all_complete() {
    let handles: Vec<_> = (0..4 * MAX_FILE_JOBS)
        .map(|i| {
            tokio::spawn(file_job(Clock::System, move || {
                std::thread::sleep(Duration::from_millis(5));
                (i, std::thread::current().name().map(str::to_string))
            }))
        })
        .collect();
    for (want, h) in handles.into_iter().enumerate() {
        let (got, thread) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("every file job completes")
            .expect("the task ran")
            .expect("the job ran");
        assert_eq!(got, want);
        let thread = thread.unwrap_or_default();
        assert!(thread.starts_with("tv-files-"), "{thread}");
    }
    // Every thread idle and waiting: a new job must still wake one (in a burst, threads coming back from a job find
    // the queue non-empty anyway).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = tokio::time::timeout(Duration::from_secs(10), file_job(Clock::System, || 7))
        .await
        .expect("a job queued while every file thread waits is run");
    assert_eq!(late.expect("the job ran"), 7);
}
