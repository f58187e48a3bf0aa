//! Fleet simulator: N sidecars with 1 h tokens on a virtual clock against one token server that has a total outage,
//! scheduled by the project's own `schedule` functions (not a copy), beside naive policies, same seed, same fleet.
//!
//! ```text
//! cargo run --release --example fleet_sim -- [--sidecars 10000] [--seed 1] [--seeds 1] [--outage 600]
//!                                             [--chart docs/fleet-sim.png] [--csv FILE]
//! ```
//!
//! `--chart` needs `--features fleet-sim-chart` (the plotting crates; bench/run builds with it).
//!
//! Model: requests take no time and the server has no capacity limit, so the request rate is exactly what the
//! policies ask of it. Pods start uniformly over the first hour; the steady state is measured from 4 h to the
//! outage at 12 h (by then the start-up ripples have mixed); the outage is total (every request fails, transient);
//! the run ends 2 h after recovery.
//! Rates are counted in 10-second buckets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use token_vendor::{
    backoff, next_refresh, refresh_buffer, remaining, retry_delay, Failure, RefreshPolicy,
};

const BUCKET: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);

/// How a sidecar decides when to refresh and when to retry.
#[derive(Debug, Clone, Copy)]
enum Policy {
    /// token-vendor: `schedule::next_refresh` and `schedule::retry_delay`.
    TokenVendor,
    /// token-vendor's refresh window, but retries by `schedule::backoff` alone (capped exponential, full jitter),
    /// without sizing the spread by the remaining validity.
    BackoffOnly,
    /// Refresh a fixed time before expiry, retry at a fixed interval; no jitter anywhere.
    Naive {
        before_expiry: Duration,
        retry_every: Duration,
    },
}

impl Policy {
    fn name(&self) -> String {
        match self {
            Policy::TokenVendor => "token-vendor".into(),
            Policy::BackoffOnly => "token-vendor window, backoff only".into(),
            Policy::Naive {
                before_expiry,
                retry_every,
            } => format!(
                "naive: {}s before expiry, retry every {}s",
                before_expiry.as_secs(),
                retry_every.as_secs()
            ),
        }
    }
}

struct Args {
    sidecars: usize,
    seed: u64,
    seeds: u64,
    lifetime: Duration,
    outage: Duration,
    chart: Option<PathBuf>,
    csv: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sidecars: 10_000,
        seed: 1,
        seeds: 1,
        lifetime: HOUR,
        outage: Duration::from_secs(600),
        chart: None,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| die(&format!("not a number: {v}")))
        };
        match flag.as_str() {
            "--sidecars" => a.sidecars = num(value()) as usize,
            "--seed" => a.seed = num(value()),
            "--seeds" => a.seeds = num(value()).max(1),
            "--lifetime" => a.lifetime = Duration::from_secs(num(value())),
            "--outage" => a.outage = Duration::from_secs(num(value())),
            "--chart" => a.chart = Some(value().into()),
            "--csv" => a.csv = Some(value().into()),
            "-h" | "--help" => {
                println!("usage: fleet_sim [--sidecars N] [--seed S] [--seeds K] [--lifetime SECS] [--outage SECS] [--chart PNG] [--csv FILE]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("fleet_sim: {msg}");
    std::process::exit(2)
}

/// One sidecar's state.
struct Sidecar {
    /// `refresh_time` of the token it holds.
    refresh_time: Option<SystemTime>,
    failures: u32,
    rng: StdRng,
}

/// What one simulated run measured.
struct Report {
    policy: String,
    /// Requests per 10-second bucket, from t = 0.
    buckets: Vec<u32>,
    steady_mean: f64,
    steady_p99: f64,
    steady_max: f64,
    /// Requests per second in the busiest bucket from recovery to the end.
    peak_after: f64,
    /// Requests per second in the busiest bucket during the outage (all of them failed).
    peak_during: f64,
    failed_requests: u64,
    /// Sidecars that were retrying when the server recovered.
    failing_at_recovery: usize,
    /// From recovery until the last of those has a fresh token.
    drain: Duration,
    /// Tokens that were `valid()` at recovery and still passed their `refresh_time`.
    valid_but_lapsed: usize,
    /// For each of those, how long after recovery its `refresh_time` was.
    lapsed_margins: Vec<Duration>,
    /// Sidecars whose token had lapsed at recovery, and how many were not valid again within `max_backoff` + 1 s.
    lapsed_at_recovery: usize,
    lapsed_slow: usize,
    /// Longest time from recovery to a fresh token among the lapsed ones.
    lapsed_worst: Duration,
}

struct Sim<'a> {
    args: &'a Args,
    policy: Policy,
    refresh: RefreshPolicy,
    t0: SystemTime,
    outage_at: Duration,
    recovery: Duration,
    end: Duration,
    warm: Duration,
}

impl Sim<'_> {
    fn up(&self, t: Duration) -> bool {
        t < self.outage_at || t >= self.recovery
    }

    fn run(&self, seed: u64) -> Report {
        let n = self.args.sidecars;
        let mut master = StdRng::seed_from_u64(seed);
        let mut fleet = Vec::with_capacity(n);
        let mut queue = BinaryHeap::with_capacity(n);
        for i in 0..n {
            // The same draws for every policy: each sidecar's start time and its own random stream.
            let start = self.args.lifetime.mul_f64(master.random::<f64>());
            fleet.push(Sidecar {
                refresh_time: None,
                failures: 0,
                rng: StdRng::seed_from_u64(master.random()),
            });
            queue.push(Reverse((start, i)));
        }
        let mut buckets = vec![0u32; (self.end.as_secs() / BUCKET.as_secs()) as usize + 1];
        let mut failed_buckets = vec![0u32; buckets.len()];
        // At recovery: (was failing, refresh_time held), then the time of the first success after it.
        let mut at_recovery: Option<Vec<(bool, Option<SystemTime>)>> = None;
        let mut first_success = vec![None::<Duration>; n];
        let mut failed_requests = 0u64;

        while let Some(Reverse((t, i))) = queue.pop() {
            if t >= self.end {
                break;
            }
            if at_recovery.is_none() && t >= self.recovery {
                at_recovery = Some(
                    fleet
                        .iter()
                        .map(|s| (s.failures > 0, s.refresh_time))
                        .collect(),
                );
            }
            let b = (t.as_nanos() / BUCKET.as_nanos()) as usize;
            buckets[b] += 1;
            let now = self.t0 + t;
            let s = &mut fleet[i];
            let u: f64 = s.rng.random();
            let next = if self.up(t) {
                let lifetime = self.args.lifetime;
                let usable = lifetime - refresh_buffer(lifetime);
                s.refresh_time = Some(now + usable);
                s.failures = 0;
                if at_recovery.is_some() && first_success[i].is_none() {
                    first_success[i] = Some(t);
                }
                match self.policy {
                    Policy::TokenVendor | Policy::BackoffOnly => {
                        next_refresh(now, usable, now, &self.refresh, u)
                    }
                    Policy::Naive { before_expiry, .. } => lifetime.saturating_sub(before_expiry),
                }
            } else {
                failed_requests += 1;
                failed_buckets[b] += 1;
                s.failures += 1;
                match self.policy {
                    Policy::TokenVendor => retry_delay(
                        &self.refresh,
                        s.failures,
                        Failure::Transient { retry_after: None },
                        s.refresh_time.and_then(|rt| remaining(rt, now)),
                        u,
                    ),
                    Policy::BackoffOnly => backoff(&self.refresh, s.failures, u),
                    Policy::Naive { retry_every, .. } => retry_every,
                }
            };
            assert!(!next.is_zero(), "{:?} scheduled a hot loop", self.policy);
            queue.push(Reverse((t + next, i)));
        }

        let rate = |c: &u32| f64::from(*c) / BUCKET.as_secs_f64();
        let bucket_of = |d: Duration| (d.as_secs() / BUCKET.as_secs()) as usize;
        let mut steady: Vec<f64> = buckets[bucket_of(self.warm)..bucket_of(self.outage_at)]
            .iter()
            .map(rate)
            .collect();
        steady.sort_by(f64::total_cmp);
        let steady_mean = steady.iter().sum::<f64>() / steady.len() as f64;
        let steady_p99 = steady[((steady.len() as f64 * 0.99) as usize).min(steady.len() - 1)];
        let steady_max = *steady.last().unwrap_or(&0.0);
        let max_rate = |r: std::ops::Range<Duration>| {
            buckets[bucket_of(r.start)..bucket_of(r.end).min(buckets.len())]
                .iter()
                .map(rate)
                .fold(0.0, f64::max)
        };
        let peak_after = max_rate(self.recovery..self.end);
        let peak_during = max_rate(self.outage_at..self.recovery);

        let at_recovery = at_recovery.expect("the run ends after recovery");
        let recovery_wall = self.t0 + self.recovery;
        let limit = self.refresh.max_backoff + Duration::from_secs(1);
        let mut r = Report {
            policy: self.policy.name(),
            buckets,
            steady_mean,
            steady_p99,
            steady_max,
            peak_after,
            peak_during,
            failed_requests,
            failing_at_recovery: 0,
            drain: Duration::ZERO,
            valid_but_lapsed: 0,
            lapsed_margins: Vec::new(),
            lapsed_at_recovery: 0,
            lapsed_slow: 0,
            lapsed_worst: Duration::ZERO,
        };
        for (i, (failing, refresh_time)) in at_recovery.into_iter().enumerate() {
            let fresh = first_success[i].map(|t| t - self.recovery);
            let valid = refresh_time.is_some_and(|rt| rt > recovery_wall);
            if failing {
                r.failing_at_recovery += 1;
                r.drain = r.drain.max(fresh.unwrap_or(Duration::MAX));
            }
            if valid {
                let rt = refresh_time.unwrap_or(recovery_wall);
                if first_success[i].is_none_or(|t| self.t0 + t >= rt) {
                    r.valid_but_lapsed += 1;
                    r.lapsed_margins
                        .push(rt.duration_since(recovery_wall).unwrap_or_default());
                }
            } else {
                r.lapsed_at_recovery += 1;
                let took = fresh.unwrap_or(Duration::MAX);
                r.lapsed_worst = r.lapsed_worst.max(took);
                if took > limit {
                    r.lapsed_slow += 1;
                }
            }
        }
        r
    }
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::TokenVendor,
        Policy::BackoffOnly,
        Policy::Naive {
            before_expiry: Duration::from_secs(300),
            retry_every: Duration::from_secs(10),
        },
        Policy::Naive {
            before_expiry: Duration::from_secs(60),
            retry_every: Duration::from_secs(1),
        },
    ]
}

fn secs(d: Duration) -> String {
    if d == Duration::MAX {
        "never".into()
    } else {
        format!("{:.0} s", d.as_secs_f64())
    }
}

fn main() {
    let args = parse_args();
    if let Some(path) = args
        .chart
        .as_deref()
        .filter(|_| !cfg!(feature = "fleet-sim-chart"))
    {
        draw_chart(path, &[], Duration::ZERO, Duration::ZERO); // says how to build it, before the long run
    }
    let outage_at = 12 * HOUR;
    let sim = |policy| Sim {
        args: &args,
        policy,
        refresh: RefreshPolicy::default(),
        t0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        outage_at,
        recovery: outage_at + args.outage,
        end: outage_at + args.outage + 2 * HOUR,
        warm: 4 * HOUR,
    };
    let p = RefreshPolicy::default();
    println!(
        "# fleet_sim: {} sidecars, {} s tokens, total outage of {} s at 12 h, seed {}, policy window {:?} backoff {}..{} s\n",
        args.sidecars,
        args.lifetime.as_secs(),
        args.outage.as_secs(),
        args.seed,
        p.window,
        p.min_backoff.as_secs_f64(),
        p.max_backoff.as_secs_f64()
    );
    println!("Rates in requests/s, counted in 10-second buckets. Targets: peak after the outage <= 3x the steady mean; no token valid at recovery passes its refresh_time; every lapsed token valid again within max_backoff + 1 s = {} s.\n", (p.max_backoff + Duration::from_secs(1)).as_secs());
    println!("| policy | steady mean | steady p99 | steady max | requests during outage (all fail) | peak during outage | peak after | peak / mean | failing at recovery | drain | valid at recovery yet lapsed | lapsed at recovery | lapsed: slowest back | lapsed back later than {} s |", (p.max_backoff + Duration::from_secs(1)).as_secs());
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut reports = Vec::new();
    for policy in policies() {
        let r = sim(policy).run(args.seed);
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.2}x | {} | {} | {} | {} | {} | {} |",
            r.policy,
            r.steady_mean,
            r.steady_p99,
            r.steady_max,
            r.failed_requests,
            r.peak_during,
            r.peak_after,
            r.peak_after / r.steady_mean,
            r.failing_at_recovery,
            secs(r.drain),
            r.valid_but_lapsed,
            r.lapsed_at_recovery,
            secs(r.lapsed_worst),
            r.lapsed_slow
        );
        reports.push(r);
    }
    if args.seeds > 1 {
        println!(
            "\nRobustness, token-vendor over seeds {}..{}:\n",
            args.seed,
            args.seed + args.seeds - 1
        );
        println!("| seeds | worst peak / mean | worst drain | valid at recovery yet lapsed (total) | their refresh_time after recovery | lapsed back later than {} s (total) | worst lapsed back |", (p.max_backoff + Duration::from_secs(1)).as_secs());
        println!("|---:|---:|---:|---:|---|---:|---:|");
        let (mut ratio, mut drain, mut vbl, mut slow, mut worst) =
            (0.0f64, Duration::ZERO, 0, 0, Duration::ZERO);
        let mut margins = Vec::new();
        for s in args.seed..args.seed + args.seeds {
            let r = sim(Policy::TokenVendor).run(s);
            ratio = ratio.max(r.peak_after / r.steady_mean);
            drain = drain.max(r.drain);
            vbl += r.valid_but_lapsed;
            margins.extend(
                r.lapsed_margins
                    .iter()
                    .map(|m| format!("{:.1} ms", m.as_secs_f64() * 1e3)),
            );
            slow += r.lapsed_slow;
            worst = worst.max(r.lapsed_worst);
        }
        println!(
            "| {} | {:.2}x | {} | {} | {} | {} | {} |",
            args.seeds,
            ratio,
            secs(drain),
            vbl,
            if margins.is_empty() {
                "-".to_string()
            } else {
                margins.join(", ")
            },
            slow,
            secs(worst)
        );
    }
    if let Some(path) = &args.csv {
        let mut out = String::from("t_seconds");
        for r in &reports {
            let _ = write!(out, ",{}", r.policy.replace(',', ";"));
        }
        out.push('\n');
        for b in 0..reports[0].buckets.len() {
            let _ = write!(out, "{}", b as u64 * BUCKET.as_secs());
            for r in &reports {
                let _ = write!(
                    out,
                    ",{:.1}",
                    f64::from(r.buckets[b]) / BUCKET.as_secs_f64()
                );
            }
            out.push('\n');
        }
        std::fs::write(path, out).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    }
    if let Some(path) = &args.chart {
        draw_chart(path, &reports, outage_at, args.outage);
    }
}

#[cfg(feature = "fleet-sim-chart")]
fn draw_chart(path: &std::path::Path, reports: &[Report], outage_at: Duration, outage: Duration) {
    chart::draw(path, reports, outage_at, outage)
        .unwrap_or_else(|e| die(&format!("chart {}: {e}", path.display())));
    println!("\nchart: {}", path.display());
}

#[cfg(not(feature = "fleet-sim-chart"))]
fn draw_chart(path: &std::path::Path, _: &[Report], _: Duration, _: Duration) {
    die(&format!(
        "cannot draw {}: built without the plotting crates; build with --features fleet-sim-chart (bench/run does)",
        path.display()
    ));
}

/// The PNG: one panel per policy, request rate over time around the outage.
#[cfg(feature = "fleet-sim-chart")]
mod chart {
    use super::*;
    use plotters::prelude::*;

    const FONT: &str = "sans-serif";

    pub fn draw(
        path: &std::path::Path,
        reports: &[Report],
        outage_at: Duration,
        outage: Duration,
    ) -> Result<(), Box<dyn std::error::Error>> {
        // An embedded font: no system font libraries needed.
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "the embedded font did not load")?;
        let root = BitMapBackend::new(path, (1200, 300 * reports.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let from = -30.0f64;
        let to = 90.0f64;
        let o = outage_at.as_secs_f64();
        let len_min = outage.as_secs_f64() / 60.0;
        for (area, r) in root.split_evenly((reports.len(), 1)).iter().zip(reports) {
            let points: Vec<(f64, f64)> = r
                .buckets
                .iter()
                .enumerate()
                .map(|(b, c)| {
                    (
                        (b as f64 * BUCKET.as_secs_f64() - o) / 60.0,
                        f64::from(*c) / BUCKET.as_secs_f64(),
                    )
                })
                .filter(|(x, _)| (from..=to).contains(x))
                .collect();
            let top = points
                .iter()
                .map(|p| p.1)
                .fold(r.steady_mean * 3.5, f64::max)
                * 1.08;
            let mut c = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{}: peak after recovery {:.1}/s = {:.1}x the steady mean {:.2}/s; drain {}",
                        r.policy,
                        r.peak_after,
                        r.peak_after / r.steady_mean,
                        r.steady_mean,
                        secs(r.drain)
                    ),
                    (FONT, 18),
                )
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(56)
                .build_cartesian_2d(from..to, 0.0..top)?;
            c.configure_mesh()
                .x_desc("minutes from the start of the outage")
                .y_desc("requests/s (10 s buckets)")
                .label_style((FONT, 13))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            c.draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (len_min, top)],
                RGBColor(255, 120, 120).mix(0.25).filled(),
            )))?
            .label("outage (every request fails)")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 16, y + 5)],
                    RGBColor(255, 120, 120).mix(0.25).filled(),
                )
            });
            c.draw_series(LineSeries::new(points, BLUE.stroke_width(1)))?
                .label("token server requests/s")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
            let limit = 3.0 * r.steady_mean;
            c.draw_series(LineSeries::new(
                [(from, limit), (to, limit)],
                RGBColor(200, 0, 0).stroke_width(1),
            ))?
            .label("3x steady mean (target ceiling)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(200, 0, 0)));
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}
