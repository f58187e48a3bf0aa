//! The notifier's retry and supersede logic on tokio's paused clock against a scripted delivery, and the pid file rules against real files and processes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::clock::Clock;

#[derive(Clone, Copy, Debug)]
enum Step {
    Deliver,
    Fail,
    /// Fails without a retry (as a signal does).
    FailFinal,
    Skip,
    /// Never answers; counted in `dropped` when the attempt is cancelled.
    Hang,
}

/// A delivery that follows a script and reports every attempt (its time and notice) on a channel.
struct Script {
    steps: Mutex<VecDeque<Step>>,
    /// What comes once the script is used up.
    then: Step,
    seen: mpsc::UnboundedSender<(Instant, Notice)>,
    dropped: Arc<AtomicUsize>,
}

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn miss() -> Miss {
    Miss {
        class: "scripted",
        detail: "scripted failure".into(),
    }
}

impl Deliver for Script {
    async fn deliver(&self, notice: Notice) -> Attempt {
        let _ = self.seen.send((Instant::now(), notice));
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(self.then);
        match step {
            Step::Deliver => Attempt::Delivered,
            Step::Fail => Attempt::Failed {
                miss: miss(),
                retry: true,
            },
            Step::FailFinal => Attempt::Failed {
                miss: miss(),
                retry: false,
            },
            Step::Skip => Attempt::Skipped(miss()),
            Step::Hang => {
                let _guard = DropCount(self.dropped.clone());
                std::future::pending::<()>().await;
                Attempt::Delivered
            }
        }
    }
}

struct Rig {
    notifier: Notifier,
    seen: mpsc::UnboundedReceiver<(Instant, Notice)>,
    dropped: Arc<AtomicUsize>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
}

const T: &str = "t";

fn policy() -> RefreshPolicy {
    RefreshPolicy {
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        ..RefreshPolicy::default()
    }
}

/// A scripted hook, the state and metrics it reports to, and the receiving ends of its script.
struct Parts {
    hook: Hook<Script>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    seen: mpsc::UnboundedReceiver<(Instant, Notice)>,
    dropped: Arc<AtomicUsize>,
}

fn parts(steps: &[Step], then: Step, retry: Retry) -> Parts {
    let state = State::new(Clock::virtual_at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    state.register(T, "https://idp.example/t".into());
    state.update(T, |s| {
        s.notify = Some(NotifyStatus::new("http", "http://127.0.0.1/".into()))
    });
    let metrics = Arc::new(Metrics::new());
    metrics.register_notify(T);
    let (tx, seen) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicUsize::new(0));
    let script = Script {
        steps: Mutex::new(steps.iter().copied().collect()),
        then,
        seen: tx,
        dropped: dropped.clone(),
    };
    let hook = Hook {
        token: T.into(),
        kind: "http",
        target: "http://127.0.0.1/".into(),
        deliver: script,
        policy: policy(),
        retry,
    };
    Parts {
        hook,
        state,
        metrics,
        seen,
        dropped,
    }
}

fn rig(steps: &[Step], then: Step, retry: Retry) -> Rig {
    let Parts {
        hook,
        state,
        metrics,
        seen,
        dropped,
    } = parts(steps, then, retry);
    let notifier = Notifier::start(hook, state.clone(), metrics.clone(), Some(7));
    Rig {
        notifier,
        seen,
        dropped,
        state,
        metrics,
    }
}

impl Rig {
    fn count(&self, result: &str) -> u64 {
        let text = self.metrics.encode(&self.state);
        let prefix = format!("token_vendor_notify_total{{token=\"{T}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
            .parse()
            .unwrap()
    }

    fn counts(&self) -> [u64; 4] {
        ["success", "error", "skipped", "superseded"].map(|r| self.count(r))
    }

    /// The next attempt, within a (paused-clock) day: a notifier stuck on one attempt fails the test, not hangs it.
    async fn attempt(&mut self) -> (Instant, Notice) {
        tokio::time::timeout(Duration::from_secs(86_400), self.seen.recv())
            .await
            .expect("no attempt within a day")
            .expect("the notifier task ended")
    }

    /// Whether any attempt comes within `d`.
    async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.seen.recv()).await.is_err()
    }

    fn publish(&mut self, secs: u64) {
        self.notifier
            .publish(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
}

#[tokio::test(start_paused = true)]
async fn one_publish_is_one_delivery() {
    let mut r = rig(&[], Step::Deliver, Retry::UntilSuperseded);
    let t0 = Instant::now();
    r.publish(100);
    let (at, n) = r.attempt().await;
    assert_eq!(at, t0, "delivered at once");
    assert_eq!(n.seq, 1);
    assert!(
        r.quiet_for(Duration::from_secs(3600)).await,
        "nothing more without a publish"
    );
    assert_eq!(r.counts(), [1, 0, 0, 0]);
    let status = r.state.status();
    let n = status[0].notify.as_ref().unwrap();
    assert_eq!(n.last_result, Some("success"));
    assert!(n.last_success.is_some() && n.problem.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_is_retried_with_the_refresh_backoff_until_it_is_delivered() {
    let mut r = rig(
        &[Step::Fail, Step::Fail, Step::Fail],
        Step::Deliver,
        Retry::UntilSuperseded,
    );
    r.publish(100);
    let mut times = Vec::new();
    for _ in 0..4 {
        times.push(r.attempt().await.0);
    }
    // Full jitter over [min_backoff, min(max_backoff, min_backoff * 2^(n-1))]: 1 s, then 1-2 s, then 1-4 s.
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, cap) in gaps.iter().zip([1, 2, 4]) {
        assert!(
            *gap >= Duration::from_secs(1) && *gap <= Duration::from_secs(cap),
            "{gaps:?}"
        );
    }
    assert!(r.quiet_for(Duration::from_secs(3600)).await);
    assert_eq!(r.counts(), [1, 3, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_and_retries_go_on_until_a_newer_token_supersedes() {
    let mut r = rig(&[], Step::Fail, Retry::UntilSuperseded);
    r.publish(100);
    let mut last = r.attempt().await.0;
    for _ in 0..20 {
        let (at, n) = r.attempt().await;
        assert_eq!(n.seq, 1);
        assert!(
            at - last <= Duration::from_secs(8),
            "max_backoff caps the wait"
        );
        last = at;
    }
    // The next publish replaces the failing notice at once, without waiting out the backoff.
    let t = Instant::now();
    r.publish(200);
    let (at, n) = r.attempt().await;
    assert_eq!((at, n.seq), (t, 2));
    assert_eq!(r.count("superseded"), 1);
    assert_eq!(r.count("error"), 22);
    let status = r.state.status();
    let n = status[0].notify.as_ref().unwrap();
    assert_eq!(n.last_result, Some("error"));
    assert_eq!(n.problem.as_deref(), Some("scripted failure"));
}

#[tokio::test(start_paused = true)]
async fn a_publish_during_a_hung_attempt_drops_it_and_delivers_the_newer_token() {
    let mut r = rig(&[Step::Hang], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    assert_eq!(r.attempt().await.1.seq, 1);
    // The hung attempt holds nothing up: the refresher publishes whenever it likes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let t = Instant::now();
    r.publish(200);
    let (at, n) = r.attempt().await;
    assert_eq!((at, n.seq), (t, 2));
    assert_eq!(
        r.dropped.load(Ordering::SeqCst),
        1,
        "the hung attempt was cancelled"
    );
    assert!(r.quiet_for(Duration::from_secs(3600)).await);
    assert_eq!(r.counts(), [1, 0, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn publishes_faster_than_delivery_deliver_only_the_newest() {
    let mut r = rig(&[], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    r.publish(200);
    r.publish(300);
    let (_, n) = r.attempt().await;
    assert_eq!(n.seq, 3);
    assert_eq!(
        n.refresh_time,
        SystemTime::UNIX_EPOCH + Duration::from_secs(300)
    );
    assert!(r.quiet_for(Duration::from_secs(60)).await);
    assert_eq!(r.counts(), [1, 0, 0, 2]);
}

#[tokio::test(start_paused = true)]
async fn skipped_and_final_failures_are_not_retried() {
    for step in [Step::Skip, Step::FailFinal] {
        let mut r = rig(&[], step, Retry::UntilSuperseded);
        r.publish(100);
        r.attempt().await;
        assert!(r.quiet_for(Duration::from_secs(3600)).await, "{step:?}");
        r.publish(200);
        assert_eq!(
            r.attempt().await.1.seq,
            2,
            "{step:?}: the next publish is tried"
        );
        let want = match step {
            Step::Skip => [0, 0, 2, 0],
            _ => [0, 2, 0, 0],
        };
        assert_eq!(r.counts(), want, "{step:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn once_makes_one_attempt() {
    let mut r = rig(&[], Step::Fail, Retry::Never);
    r.publish(100);
    r.attempt().await;
    assert!(r.quiet_for(Duration::from_secs(3600)).await);
    assert_eq!(r.counts(), [0, 1, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn finishing_while_backing_off_makes_the_last_attempt_at_once() {
    let mut r = rig(&[Step::Fail], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    r.attempt().await;
    let Rig {
        notifier,
        mut seen,
        state,
        metrics,
        ..
    } = r;
    let t = Instant::now();
    notifier.finish(FINISH_GRACE).await;
    let (at, n) = seen.recv().await.expect("a last attempt");
    assert_eq!((at, n.seq), (t, 1), "not after the backoff: now");
    assert!(seen.recv().await.is_none(), "the task has ended");
    let text = metrics.encode(&state);
    assert!(
        text.contains("token_vendor_notify_total{token=\"t\",result=\"success\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn finishing_a_hung_attempt_gives_up_after_the_grace() {
    let mut r = rig(&[Step::Hang], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    r.attempt().await;
    let t = Instant::now();
    let dropped = r.dropped.clone();
    r.notifier.finish(FINISH_GRACE).await;
    assert_eq!(Instant::now() - t, FINISH_GRACE);
    tokio::task::yield_now().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the task was aborted");
}

#[tokio::test(start_paused = true)]
async fn finishing_with_nothing_pending_ends_at_once() {
    let mut r = rig(&[], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    r.attempt().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    r.notifier.finish(FINISH_GRACE).await;
    assert_eq!(Instant::now(), t);
    assert!(r.seen.recv().await.is_none(), "no attempt at finish");
}

#[tokio::test(start_paused = true)]
async fn a_publish_just_before_finish_is_still_delivered() {
    let mut r = rig(&[], Step::Deliver, Retry::UntilSuperseded);
    r.publish(100);
    let Rig {
        notifier, mut seen, ..
    } = r;
    notifier.finish(FINISH_GRACE).await;
    assert_eq!(seen.recv().await.map(|(_, n)| n.seq), Some(1));
}

// ---------------------------------------------------------------------------------------------------------------
// The pid file and the signal, against real files and processes.
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn pids_are_parsed_strictly() {
    for (text, want) in [
        (&b"42"[..], Ok(42)),
        (b"42\n", Ok(42)),
        (b"2", Ok(2)),
        (b"2147483647\n", Ok(i32::MAX)),
    ] {
        assert_eq!(parse_pid(text), want, "{text:?}");
    }
    for (text, why) in [
        (&b""[..], "is empty"),
        (b"\n", "is empty"),
        (b"42\n\n", "does not hold a process id"),
        (b" 42", "does not hold a process id"),
        (b"42 ", "does not hold a process id"),
        (b"+42", "does not hold a process id"),
        (b"-1", "does not hold a process id"),
        (b"4 2", "does not hold a process id"),
        (b"42\r\n", "does not hold a process id"),
        (b"0x2a", "does not hold a process id"),
        (b"\xff\xfe", "does not hold a process id"),
        (b"042", "leading zero"),
        (b"2147483648", "too large"),
        (b"99999999999999999999", "too large"),
        (b"0", "names pid 0"),
        (b"1\n", "names pid 1"),
    ] {
        let e = parse_pid(text).unwrap_err();
        assert!(e.contains(why), "{text:?}: {e}");
    }
}

#[test]
fn start_ticks_is_read_after_the_command_name() {
    let line =
        b"1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
    assert_eq!(start_ticks(line), Some(987654));
    assert_eq!(start_ticks(b"1234 (x) S 1"), None);
    assert_eq!(start_ticks(b"no parenthesis"), None);
    let own = std::fs::read(format!("/proc/{}/stat", std::process::id())).unwrap();
    assert!(start_ticks(&own).is_some());
}

#[test]
fn a_pid_file_older_than_its_process_is_stale() {
    let s = Duration::from_secs;
    assert!(
        !file_predates_process(s(5), s(10)),
        "written after the process started"
    );
    assert!(!file_predates_process(s(10), s(10)));
    assert!(
        !file_predates_process(s(10) + STALE_SLACK, s(10)),
        "within the slack"
    );
    assert!(file_predates_process(s(11) + STALE_SLACK, s(10)));
    assert!(file_predates_process(s(3600), s(0)));
}

fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep")
}

fn write_pid(path: &Path, pid: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid}\n")).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

const SIGTERM: SignalName = SignalName {
    name: "SIGTERM",
    number: libc::SIGTERM,
};

#[test]
fn the_signal_goes_to_the_process_the_pid_file_names_now() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.pid");
    let mut a = sleeper();
    let mut b = sleeper();
    write_pid(&f, a.id());
    write_pid(&f, b.id());
    assert_eq!(signal_pid_file(&f, SIGTERM), Attempt::Delivered);
    assert_eq!(b.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert!(
        a.try_wait().unwrap().is_none(),
        "a was not named by the file at the time"
    );
    // b is gone: its pid is stale now.
    match signal_pid_file(&f, SIGTERM) {
        Attempt::Skipped(m) => {
            assert_eq!(m.class, "stale");
            assert!(m.detail.contains("no process"), "{m:?}");
        }
        other => panic!("{other:?}"),
    }
    let _ = a.kill();
    let _ = a.wait();
}

#[test]
fn a_process_younger_than_the_pid_file_is_not_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.pid");
    let mut c = sleeper();
    write_pid(&f, c.id());
    // The file claims to be an hour old: whoever wrote it, it was not this process.
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    match signal_pid_file(&f, SIGTERM) {
        Attempt::Skipped(m) => {
            assert_eq!(m.class, "stale");
            assert!(
                m.detail.contains("started after the file was written"),
                "{m:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(c.try_wait().unwrap().is_none(), "not signalled");
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn pid_files_that_name_no_process_say_why_without_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.pid");
    match signal_pid_file(&f, SIGTERM) {
        Attempt::Skipped(m) => assert_eq!(
            (m.class, m.detail.contains("does not exist")),
            ("missing", true)
        ),
        other => panic!("{other:?}"),
    }
    let secret = "hunter2-secret-in-the-wrong-file";
    for (content, class) in [(secret, "invalid"), ("1\n", "invalid")] {
        std::fs::write(&f, content).unwrap();
        match signal_pid_file(&f, SIGTERM) {
            Attempt::Failed { miss, retry: false } => {
                assert_eq!(miss.class, class);
                assert!(!miss.detail.contains("hunter2"), "{miss:?}");
                assert!(miss.detail.contains(&f.display().to_string()), "{miss:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
    match signal_pid_file(&f, SIGTERM) {
        Attempt::Failed { miss, .. } => assert_eq!(miss.class, "self"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&f, "1".repeat(40)).unwrap();
    assert!(matches!(
        read_pid_file(&f),
        Err(PidFileError::Unreadable(ReadError::TooLarge { .. }))
    ));
    // A symlink (to a secret, say) and a FIFO are refused without being read or waited on.
    let target = dir.path().join("secret");
    std::fs::write(&target, "4242").unwrap();
    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = read_pid_file(&link).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    let fifo = dir.path().join("fifo.pid");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = read_pid_file(&fifo).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn the_http_body_holds_the_name_and_refresh_time_only() {
    let n = Notice {
        seq: 3,
        refresh_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
    };
    let v: serde_json::Value = serde_json::from_str(&HttpHook::body("orders", n)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"token": "orders", "refresh_time": "2023-11-14T22:13:20.250Z"})
    );
}

/// What an app that refuses connections looks like when a newer token lands while a retry is in flight: the first
/// refusal is warned about once, and neither the attempt cut short nor the refusals after it warn again or replace
/// the problem `/status` shows.
#[test]
fn an_attempt_cut_short_after_a_warned_problem_is_not_news() {
    let Parts {
        hook,
        state,
        metrics,
        ..
    } = parts(&[], Step::Fail, Retry::UntilSuperseded);
    let mut w = Worker {
        hook,
        state: state.clone(),
        metrics,
        rng: StdRng::seed_from_u64(7),
        warned: None,
        taken: 0,
    };
    let refused = || Miss {
        class: "connect",
        detail: "POST http://127.0.0.1/: cannot connect".into(),
    };
    let cut_short = || Miss {
        class: "unanswered",
        detail: "http://127.0.0.1/: no answer before a newer token came".into(),
    };
    let problem = |state: &State| {
        state
            .snapshot()
            .remove(T)
            .and_then(|s| s.notify)
            .and_then(|n| n.problem)
    };
    assert!(w.show(NotifyResult::error, Some(refused()), true));
    assert!(!w.show(NotifyResult::superseded, Some(cut_short()), false));
    assert_eq!(problem(&state), Some(refused().detail));
    assert!(!w.show(NotifyResult::error, Some(refused()), true));
    // An app never heard from is worth the warning when its first attempt is cut short; a hung one stays quiet after.
    w.warned = None;
    assert!(w.show(NotifyResult::superseded, Some(cut_short()), false));
    assert!(!w.show(NotifyResult::superseded, Some(cut_short()), false));
    assert_eq!(problem(&state), Some(cut_short().detail));
}
