//! `sluice-gen`: writes synthetic LLM request-feedback events as JSON lines,
//! the input of sluice's main example (`examples/llm-latency.yaml`) and of
//! tests that need realistic traffic.
//!
//! The events look like what an LLM gateway would log: per-service model
//! mixes, latencies with a log-normal body and a heavy tail (so a 2 s SLO sees
//! occasional breaches), token counts, per-model prices and a small error
//! rate that grows with latency. On request the stream also carries the
//! defects a windowing pipeline must cope with: events that arrive a little
//! out of order (within the watermark's tolerance), events that arrive after
//! their window has fired, and lines that cannot be decoded.
//!
//! The same flags give byte-identical output on every machine: the PRNG is
//! ChaCha8 (its output is fixed by the algorithm), the distributions are
//! sampled here from uniform draws with `+ - * / sqrt` only, and floats are
//! printed with a fixed number of decimals.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, ensure};
use clap::Parser;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Generates deterministic JSON-lines LLM request events for sluice.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-gen", version, about)]
struct Args {
    /// Lines to write, malformed ones included.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// PRNG seed: the same flags and seed give byte-identical output.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the start of the stream, in epoch milliseconds.
    #[arg(long, default_value_t = 1_700_000_000_000)]
    start_ms: u64,
    /// Mean events per second of event time (Poisson arrivals).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Number of services (chat-api, search-rag, summarizer, code-assist, then svc-5, ...).
    #[arg(long, default_value_t = 4)]
    services: usize,
    /// Fraction of events whose `ts` is moved back by up to --max-delay-ms.
    #[arg(long, default_value_t = 0.05)]
    out_of_order: f64,
    /// Largest out-of-order delay; keep it below the pipeline's max_out_of_orderness
    /// (5 s in the demo) so these events are reordered, not dropped as late.
    #[arg(long, default_value_t = 3000)]
    max_delay_ms: u64,
    /// Fraction of events whose `ts` is moved back by --late-delay-ms, so they
    /// arrive after their window has fired.
    #[arg(long, default_value_t = 0.0)]
    late: f64,
    /// How far back late events are moved.
    #[arg(long, default_value_t = 60_000)]
    late_delay_ms: u64,
    /// Fraction of lines replaced by a malformed record (truncated JSON, a
    /// string latency, a missing `ts`, or a line that is not JSON).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Fraction of well-formed events written a second time, right after the
    /// next event (an at-least-once redelivery, for `dedup:` pipelines). The
    /// copies are extra lines beyond --events.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Output file; `-` is standard output.
    #[arg(long, default_value = "-")]
    out: String,
}

impl Args {
    /// Checks what clap's parsers cannot: ranges and the relation between flags.
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.events > 0, "--events must be at least 1");
        ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a positive number, got {}",
            self.rate
        );
        ensure!(self.services > 0, "--services must be at least 1");
        for (flag, p) in [
            ("--out-of-order", self.out_of_order),
            ("--late", self.late),
            ("--malformed", self.malformed),
            ("--duplicates", self.duplicates),
        ] {
            ensure!(
                (0.0..=1.0).contains(&p),
                "{flag} must be a fraction in [0, 1], got {p}"
            );
        }
        // One draw decides between on time, out of order and late, so the two
        // shares must fit in one.
        ensure!(
            self.out_of_order + self.late <= 1.0,
            "--out-of-order plus --late must not exceed 1, got {}",
            self.out_of_order + self.late
        );
        Ok(())
    }
}

/// What was written, for the closing line on stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    events: u64,
    out_of_order: u64,
    late: u64,
    malformed: u64,
    duplicates: u64,
}

// ---------------------------------------------------------------------------
// Deterministic sampling

/// ln(2), split so that `k * LN2_HI` is exact for the |k| <= 1100 used here.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// Natural logarithm of a positive, normal `x`.
///
/// std's `ln`, `exp` and `cos` call the platform's libm, which need not be
/// correctly rounded: glibc, musl and macOS may differ in the last bit, and
/// that can flip a printed digit. This uses only IEEE-exact operations, so
/// it returns the same bits everywhere.
fn det_ln(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // Centre the mantissa on 1 so the series below converges fast.
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), |s| <= 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..12 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    let e = e as f64;
    e * LN2_HI + (e * LN2_LO + 2.0 * sum)
}

/// `e^x` for |x| < 700, with IEEE-exact operations only (see [`det_ln`]).
fn det_exp(x: f64) -> f64 {
    debug_assert!(x.abs() < 700.0);
    let k = (x / std::f64::consts::LN_2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO; // |r| <= 0.35
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=20 {
        term *= r / f64::from(n);
        sum += term;
    }
    // 2^k built from its bits: exact, unlike a call to `powi`.
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// One independent ChaCha8 stream and the distributions drawn from it.
struct Draw(ChaCha8Rng);

impl Draw {
    /// Each concern (arrivals, request bodies, disorder, malformed lines) gets
    /// its own stream, so raising `--late` or `--malformed` does not change
    /// the timing or contents of the other events.
    fn new(seed: u64, stream: u64) -> Self {
        // The seed is expanded here rather than by `seed_from_u64`, whose
        // expansion belongs to rand_core and could change with it.
        let mut state = seed;
        let mut key = [0u8; 32];
        for chunk in key.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Draw(rng)
    }

    /// Uniform in [0, 1), with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    fn unit_open(&mut self) -> f64 {
        1.0 - self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n].
    fn up_to(&mut self, n: u64) -> u64 {
        ((self.unit() * (n as f64 + 1.0)) as u64).min(n)
    }

    /// Standard normal, by Marsaglia's polar method: unlike Box-Muller it
    /// needs no `cos`, so it stays within [`det_ln`] and `sqrt`.
    fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.unit() - 1.0;
            let v = 2.0 * self.unit() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * det_ln(s) / s).sqrt();
            }
        }
    }

    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * det_exp(sigma * self.normal())
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -det_ln(self.unit_open()) * mean
    }

    /// Index drawn with probability proportional to its weight.
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const STREAM_ARRIVALS: u64 = 1;
const STREAM_BODIES: u64 = 2;
const STREAM_DISORDER: u64 = 3;
const STREAM_MALFORMED: u64 = 4;
const STREAM_DUPLICATES: u64 = 5;

// ---------------------------------------------------------------------------
// The traffic model

/// A model's speed and list price. Speeds are those of a fast gateway with
/// short completions, tuned so that a 2 s SLO is breached by a few percent
/// of requests, not most of them.
struct Model {
    name: &'static str,
    /// Fixed overhead before the first token.
    base_ms: f64,
    prefill_ms_per_1k: f64,
    ms_per_completion_token: f64,
    usd_per_1k_prompt: f64,
    usd_per_1k_completion: f64,
}

const MODELS: [Model; 6] = [
    Model {
        name: "gpt-4o",
        base_ms: 250.0,
        prefill_ms_per_1k: 60.0,
        ms_per_completion_token: 2.2,
        usd_per_1k_prompt: 0.0025,
        usd_per_1k_completion: 0.01,
    },
    Model {
        name: "gpt-4o-mini",
        base_ms: 150.0,
        prefill_ms_per_1k: 25.0,
        ms_per_completion_token: 1.5,
        usd_per_1k_prompt: 0.000_15,
        usd_per_1k_completion: 0.0006,
    },
    Model {
        name: "claude-3-5-sonnet",
        base_ms: 300.0,
        prefill_ms_per_1k: 70.0,
        ms_per_completion_token: 2.5,
        usd_per_1k_prompt: 0.003,
        usd_per_1k_completion: 0.015,
    },
    Model {
        name: "claude-3-5-haiku",
        base_ms: 180.0,
        prefill_ms_per_1k: 30.0,
        ms_per_completion_token: 1.6,
        usd_per_1k_prompt: 0.0008,
        usd_per_1k_completion: 0.004,
    },
    Model {
        name: "llama-3.1-70b",
        base_ms: 220.0,
        prefill_ms_per_1k: 50.0,
        ms_per_completion_token: 2.5,
        usd_per_1k_prompt: 0.000_88,
        usd_per_1k_completion: 0.000_88,
    },
    Model {
        name: "llama-3.1-8b",
        base_ms: 80.0,
        prefill_ms_per_1k: 15.0,
        ms_per_completion_token: 0.8,
        usd_per_1k_prompt: 0.000_18,
        usd_per_1k_completion: 0.000_18,
    },
];

/// Index into [`MODELS`] and its share of a service's requests.
type ModelMix = &'static [(usize, f64)];

/// A service's traffic: which models it calls and how long its prompts and
/// completions typically are.
struct Service {
    name: String,
    mix: ModelMix,
    prompt_median: f64,
    completion_median: f64,
    /// Share of all requests; skewed so one service dominates, as in practice.
    weight: f64,
}

/// The named services: (name, model mix, median prompt tokens, median completion tokens).
const NAMED_SERVICES: [(&str, ModelMix, f64, f64); 4] = [
    ("chat-api", &[(1, 0.5), (0, 0.3), (2, 0.2)], 600.0, 180.0),
    // Retrieved context makes prompts long and answers short.
    ("search-rag", &[(1, 0.6), (4, 0.4)], 2500.0, 120.0),
    ("summarizer", &[(3, 0.5), (1, 0.3), (5, 0.2)], 3000.0, 150.0),
    ("code-assist", &[(2, 0.6), (0, 0.4)], 1500.0, 180.0),
];

/// Mixes for `svc-5` onwards, taken in turn.
const EXTRA_MIXES: [ModelMix; 3] = [
    &[(0, 0.5), (4, 0.5)],
    &[(1, 0.7), (5, 0.3)],
    &[(3, 0.5), (2, 0.5)],
];

fn services(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let weight = 1.0 / (i + 1) as f64;
            match NAMED_SERVICES.get(i) {
                Some(&(name, mix, prompt_median, completion_median)) => Service {
                    name: name.to_owned(),
                    mix,
                    prompt_median,
                    completion_median,
                    weight,
                },
                None => Service {
                    name: format!("svc-{}", i + 1),
                    mix: EXTRA_MIXES[(i - NAMED_SERVICES.len()) % EXTRA_MIXES.len()],
                    prompt_median: 800.0,
                    completion_median: 150.0,
                    weight,
                },
            }
        })
        .collect()
}

/// Latency above which a request counts as slow, for the error model; the
/// same as the demo's SLO.
const SLOW_MS: f64 = 2000.0;
/// A gateway timeout caps how long any request can take.
const TIMEOUT_MS: f64 = 120_000.0;

/// One request, before it is written.
struct Request<'a> {
    ts: u64,
    line: u64,
    service: &'a str,
    model: &'static str,
    latency_ms: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    status: u16,
}

fn draw_request<'a>(d: &mut Draw, services: &'a [Service], weights: &[f64]) -> Request<'a> {
    let service = &services[d.weighted(weights)];
    let mix: Vec<f64> = service.mix.iter().map(|&(_, w)| w).collect();
    let model = &MODELS[service.mix[d.weighted(&mix)].0];

    let prompt_tokens = d
        .log_normal(service.prompt_median, 0.5)
        .round()
        .clamp(1.0, 128_000.0);
    let completion_tokens = d
        .log_normal(service.completion_median, 0.7)
        .round()
        .clamp(1.0, 8192.0);
    // Latency follows the tokens, with jitter for load and network.
    let mut latency = (model.base_ms
        + model.prefill_ms_per_1k * prompt_tokens / 1000.0
        + model.ms_per_completion_token * completion_tokens)
        * d.log_normal(1.0, 0.2);
    // The heavy tail: retries, cold replicas, queueing behind long requests.
    let stalled = d.chance(0.01);
    if stalled {
        latency *= d.uniform(5.0, 20.0);
    }
    latency = latency.min(TIMEOUT_MS);

    // Failures cluster on slow requests (timeouts, overloaded upstreams).
    let p_error = if stalled {
        0.3
    } else if latency > SLOW_MS {
        0.15
    } else {
        0.014
    };
    let status = if !d.chance(p_error) {
        200
    } else if latency > SLOW_MS {
        [500, 503][d.weighted(&[0.4, 0.6])]
    } else {
        [429, 500, 503][d.weighted(&[0.6, 0.25, 0.15])]
    };

    let (completion_tokens, cost_usd) = if status == 200 {
        let cost = prompt_tokens / 1000.0 * model.usd_per_1k_prompt
            + completion_tokens / 1000.0 * model.usd_per_1k_completion;
        (completion_tokens as u64, cost)
    } else {
        // Failed requests produce no answer and are not billed; rate-limited
        // ones are turned away before reaching the model, so they are quick.
        if status == 429 {
            latency = d.uniform(5.0, 60.0);
        }
        (0, 0.0)
    };

    Request {
        ts: 0,
        line: 0,
        service: &service.name,
        model: model.name,
        latency_ms: latency,
        prompt_tokens: prompt_tokens as u64,
        completion_tokens,
        cost_usd,
        status,
    }
}

/// How a record is written: correctly, or with one of the defects a
/// pipeline's dead-letter path must handle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Good,
    LatencyAsString,
    MissingTs,
}

fn render(r: &Request, shape: Shape) -> String {
    let ts = if shape == Shape::MissingTs {
        String::new()
    } else {
        format!("\"ts\":{},", r.ts)
    };
    let latency = if shape == Shape::LatencyAsString {
        "\"fast\"".to_owned()
    } else {
        format!("{:.1}", r.latency_ms)
    };
    format!(
        "{{{ts}\"request_id\":\"req-{:09}\",\"service\":\"{}\",\"model\":\"{}\",\
         \"latency_ms\":{latency},\"prompt_tokens\":{},\"completion_tokens\":{},\
         \"cost_usd\":{:.6},\"error\":{},\"status\":{}}}",
        r.line,
        r.service,
        r.model,
        r.prompt_tokens,
        r.completion_tokens,
        r.cost_usd,
        r.status != 200,
        r.status,
    )
}

/// The malformed line that replaces the `nth` malformed record; the kinds
/// take turns so even a few malformed lines cover them all.
fn malformed_line(r: &Request, nth: u64, d: &mut Draw) -> String {
    match nth % 4 {
        0 => {
            // Cut mid-record, as a writer killed mid-line would leave it.
            let mut line = render(r, Shape::Good);
            let cut = line.len() / 4 + d.up_to(line.len() as u64 / 2) as usize;
            line.truncate(cut);
            line
        }
        1 => render(r, Shape::LatencyAsString),
        2 => render(r, Shape::MissingTs),
        _ => format!(
            "upstream proxy: connection reset by peer while logging req-{:09}",
            r.line
        ),
    }
}

/// Writes `args.events` lines to `out`. `args` must have passed [`Args::validate`].
fn generate(args: &Args, out: &mut impl Write) -> io::Result<Counts> {
    let services = services(args.services);
    let weights: Vec<f64> = services.iter().map(|s| s.weight).collect();
    let mut arrivals = Draw::new(args.seed, STREAM_ARRIVALS);
    let mut bodies = Draw::new(args.seed, STREAM_BODIES);
    let mut disorder = Draw::new(args.seed, STREAM_DISORDER);
    let mut broken = Draw::new(args.seed, STREAM_MALFORMED);
    // Its own stream: asking for duplicates changes no other line.
    let mut redeliver = Draw::new(args.seed, STREAM_DUPLICATES);
    let mut pending: Option<String> = None;

    let mean_gap_ms = 1000.0 / args.rate;
    // Kept fractional so rates above 1000/s are honoured; `ts` is its floor.
    let mut elapsed_ms = 0.0_f64;
    let mut counts = Counts::default();
    for i in 0..args.events {
        elapsed_ms += arrivals.exponential(mean_gap_ms);
        let on_time = args.start_ms.saturating_add(elapsed_ms as u64);
        let mut request = draw_request(&mut bodies, &services, &weights);
        request.line = i + 1;

        // Both draws are made for every event so the stream stays aligned
        // whatever the fractions are.
        let class = disorder.unit();
        let delay = disorder.up_to(args.max_delay_ms);
        // The first event is left alone: with no watermark yet, moving it
        // back would make it neither late nor out of order.
        let (late, out_of_order) = if i == 0 {
            (false, false)
        } else if class < args.late {
            (true, false)
        } else {
            (false, class < args.late + args.out_of_order)
        };
        request.ts = if late {
            on_time.saturating_sub(args.late_delay_ms)
        } else if out_of_order {
            on_time.saturating_sub(delay)
        } else {
            on_time
        };

        let duplicate = redeliver.chance(args.duplicates);
        let (line, good) = if broken.chance(args.malformed) {
            let line = malformed_line(&request, counts.malformed, &mut broken);
            counts.malformed += 1;
            (line, false)
        } else {
            counts.late += u64::from(late);
            counts.out_of_order += u64::from(out_of_order);
            (render(&request, Shape::Good), true)
        };
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        counts.events += 1;
        if let Some(copy) = pending.take() {
            out.write_all(copy.as_bytes())?;
            out.write_all(b"\n")?;
            counts.duplicates += 1;
        }
        if duplicate && good {
            pending = Some(line);
        }
    }
    if let Some(copy) = pending.take() {
        out.write_all(copy.as_bytes())?;
        out.write_all(b"\n")?;
        counts.duplicates += 1;
    }
    out.flush()?;
    Ok(counts)
}

fn run(args: &Args) -> anyhow::Result<Counts> {
    let sink: Box<dyn Write> = if args.out == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&args.out).with_context(|| format!("cannot create {}", args.out))?)
    };
    let mut out = BufWriter::with_capacity(1 << 16, sink);
    generate(args, &mut out).with_context(|| format!("cannot write to {}", args.out))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("sluice-gen: error: {e:#}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(c) => {
            eprintln!(
                "sluice-gen: wrote {} events ({} out of order, {} late, {} malformed) \
                 and {} duplicates to {}",
                c.events, c.out_of_order, c.late, c.malformed, c.duplicates, args.out
            );
            ExitCode::SUCCESS
        }
        // A reader that stops early (`sluice-gen | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-gen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let args = Args::parse_from(["sluice-gen"].iter().chain(extra));
        args.validate().unwrap();
        args
    }

    fn output(args: &Args) -> (String, Counts) {
        let mut buf = Vec::new();
        let counts = generate(args, &mut buf).unwrap();
        (String::from_utf8(buf).unwrap(), counts)
    }

    const FIELDS: [&str; 10] = [
        "ts",
        "request_id",
        "service",
        "model",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "error",
        "status",
    ];

    /// The line as a complete event, or `None` if it is one of the malformed ones.
    fn parse_good(line: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let serde_json::Value::Object(obj) = serde_json::from_str(line).ok()? else {
            return None;
        };
        let typed = obj.get("ts")?.is_u64()
            && obj.get("latency_ms")?.is_f64()
            && obj.get("prompt_tokens")?.is_u64()
            && obj.get("completion_tokens")?.is_u64()
            && obj.get("cost_usd")?.is_f64()
            && obj.get("error")?.is_boolean()
            && obj.get("status")?.is_u64()
            && obj.get("request_id")?.is_string()
            && obj.get("service")?.is_string()
            && obj.get("model")?.is_string();
        typed.then_some(obj)
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        let flags = [
            "--events",
            "3000",
            "--seed",
            "7",
            "--services",
            "6",
            "--late",
            "0.05",
            "--malformed",
            "0.05",
            "--out-of-order",
            "0.2",
        ];
        let (a, ca) = output(&args(&flags));
        let (b, cb) = output(&args(&flags));
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        let mut other = args(&flags);
        other.seed = 8;
        assert_ne!(a, output(&other).0);
    }

    #[test]
    fn requested_fractions_are_roughly_honoured() {
        let n = 20_000;
        let a = args(&[
            "--events",
            "20000",
            "--out-of-order",
            "0.1",
            "--late",
            "0.05",
            "--malformed",
            "0.05",
        ]);
        let (text, c) = output(&a);
        assert_eq!(c.events, n);
        assert_eq!(text.lines().count() as u64, n);
        // Late and out-of-order events are counted among the well-formed ones only.
        let good = (n - c.malformed) as f64;
        let near = |got: u64, base: f64, p: f64| {
            let want = base * p;
            // Five standard deviations of a binomial count.
            let slack = 5.0 * (base * p * (1.0 - p)).sqrt();
            assert!(
                (got as f64 - want).abs() < slack,
                "got {got}, want about {want}"
            );
        };
        near(c.malformed, n as f64, 0.05);
        near(c.out_of_order, good, 0.1);
        near(c.late, good, 0.05);

        // What the counts claim is visible in the output.
        let events: Vec<_> = text.lines().filter_map(parse_good).collect();
        assert_eq!(events.len() as u64, n - c.malformed);
        let mut max_ts = 0;
        let (mut late, mut errors, mut breaches) = (0, 0, 0);
        for e in &events {
            let ts = e["ts"].as_u64().unwrap();
            late += u64::from(ts + a.late_delay_ms / 2 < max_ts);
            max_ts = max_ts.max(ts);
            errors += u64::from(e["error"].as_bool().unwrap());
            breaches += u64::from(e["latency_ms"].as_f64().unwrap() > 2000.0);
        }
        assert_eq!(late, c.late);
        // The event-time span matches the rate: 20000 events at 100/s is about 200 s.
        let span_s = (max_ts - a.start_ms) as f64 / 1000.0;
        assert!((190.0..210.0).contains(&span_s), "span {span_s} s");
        let error_rate = errors as f64 / events.len() as f64;
        assert!(
            (0.01..0.03).contains(&error_rate),
            "error rate {error_rate}"
        );
        let breach_rate = breaches as f64 / events.len() as f64;
        assert!(
            (0.005..0.08).contains(&breach_rate),
            "SLO breach rate {breach_rate}"
        );
    }

    #[test]
    fn duplicates_are_extra_copies_of_good_lines_and_change_nothing_else() {
        let base = ["--events", "5000", "--malformed", "0.01"];
        let (plain, _) = output(&args(&base));
        let mut flags = base.to_vec();
        flags.extend(["--duplicates", "0.1"]);
        let (text, c) = output(&args(&flags));
        assert_eq!(text.lines().count() as u64, 5000 + c.duplicates);
        assert!((400..600).contains(&c.duplicates), "{}", c.duplicates);
        // Without the copies, the stream is the one asked for without them.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&str> = text.lines().filter(|l| seen.insert(*l)).collect();
        assert_eq!(firsts, plain.lines().collect::<Vec<_>>());
        // Each copy is a good event, a few lines after its original.
        let mut first_at = std::collections::HashMap::new();
        let mut copies = 0;
        for (i, line) in text.lines().enumerate() {
            if let Some(&at) = first_at.get(line) {
                assert!(i - at <= 3 && parse_good(line).is_some(), "{line}");
                copies += 1;
            } else {
                first_at.insert(line, i);
            }
        }
        assert_eq!(copies, c.duplicates);
    }

    #[test]
    fn good_lines_have_all_ten_fields_in_order() {
        let (text, c) = output(&args(&[
            "--events",
            "5000",
            "--services",
            "9",
            "--malformed",
            "0.1",
        ]));
        let mut good = 0;
        for (i, line) in text.lines().enumerate() {
            let Some(obj) = parse_good(line) else {
                continue;
            };
            good += 1;
            assert_eq!(obj.len(), 10, "{line}");
            let mut at = 0;
            for field in FIELDS {
                let pos = line.find(&format!("\"{field}\":")).expect(field);
                assert!(pos >= at, "{field} out of order in {line}");
                at = pos;
            }
            assert_eq!(obj["request_id"], format!("req-{:09}", i + 1));
            assert_eq!(obj["error"], obj["status"] != 200);
        }
        assert_eq!(good, c.events - c.malformed);
        // Every kind of malformed line shows up.
        assert!(text.contains("\"latency_ms\":\"fast\""));
        assert!(text.lines().any(|l| l.starts_with("{\"request_id\"")));
        assert!(text.lines().any(|l| l.starts_with("upstream proxy:")));
    }

    #[test]
    fn deterministic_ln_and_exp_match_std() {
        for i in 1..2000 {
            let x = i as f64 * 0.0137;
            assert!(
                (det_ln(x) - x.ln()).abs() <= 1e-14 * x.ln().abs().max(1.0),
                "ln {x}"
            );
            let y = (i as f64 - 1000.0) * 0.02;
            assert!((det_exp(y) - y.exp()).abs() <= 1e-14 * y.exp(), "exp {y}");
        }
        assert_eq!(det_ln(1.0), 0.0);
        assert_eq!(det_exp(0.0), 1.0);
    }
}
