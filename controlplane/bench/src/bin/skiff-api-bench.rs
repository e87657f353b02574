//! `skiff-api-bench`: drives a running control plane over HTTPS and reports
//! latencies.
//!
//! Every subcommand ends with one `RESULT key=value ...` line, so that
//! scripts can pick the figures out without parsing the prose above it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use skiff_bench::client::{ensure_namespace, list_resource_version, ApiTarget, Connection};
use skiff_bench::pods::{run_tag, PodTemplate};
use skiff_bench::stats::{ms, Summary};
use tokio::sync::{mpsc, Mutex};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-api-bench",
    about = "Benchmarks the Skiff API server over HTTPS"
)]
struct Options {
    /// API server URL.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// Directory with ca.crt, admin.crt and admin.key (DATA_DIR/pki).
    #[arg(long)]
    pki_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop pod creates at a fixed rate; reports latency percentiles.
    Create {
        /// Creates per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds to keep the rate up.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        #[arg(long, default_value = "bench")]
        namespace: String,
        /// Keep-alive connections the requests are spread over.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Also print latency per second of the run, to tell a steady
        /// state from stalls.
        #[arg(long)]
        timeline: bool,
    },
    /// Creates COUNT pods as fast as CONCURRENCY connections allow.
    Fill {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value = "bench")]
        namespace: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Times full JSON lists of the namespace's pods.
    List {
        #[arg(long, default_value_t = 10)]
        repeat: usize,
        #[arg(long, default_value = "bench")]
        namespace: String,
    },
    /// Opens WATCHERS pod watches, then writes one pod at a time and times
    /// each write's arrival at every watcher.
    WatchFanout {
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        #[arg(long, default_value_t = 50)]
        writes: usize,
        #[arg(long, default_value = "bench")]
        namespace: String,
        /// Pause between one write being seen everywhere and the next write.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
    },
}

/// No single request may stall a run for longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let target = ApiTarget::new(&options.server, &options.pki_dir)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            match options.command {
                Command::Create {
                    rate,
                    duration,
                    namespace,
                    connections,
                    timeline,
                } => create(&target, rate, duration, &namespace, connections, timeline).await,
                Command::Fill {
                    count,
                    namespace,
                    concurrency,
                } => fill(&target, count, &namespace, concurrency).await,
                Command::List { repeat, namespace } => list(&target, repeat, &namespace).await,
                Command::WatchFanout {
                    watchers,
                    writes,
                    namespace,
                    interval_ms,
                } => {
                    watch_fanout(
                        &target,
                        watchers,
                        writes,
                        &namespace,
                        Duration::from_millis(interval_ms),
                    )
                    .await
                }
            }
        })
}

fn pods_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

/// Outcome of one create, as seen by the client.
struct Sample {
    /// When the request was released, from the start of the run.
    offset: Duration,
    latency: Duration,
    error: Option<String>,
}

/// POSTs one pod, reconnecting first if the connection was lost.
async fn post_pod(
    target: &ApiTarget,
    connection: &mut Option<Connection>,
    path: &str,
    body: Bytes,
) -> Result<(), String> {
    let conn = match connection {
        Some(conn) if !conn.is_closed() => conn,
        _ => connection.insert(
            target
                .connect()
                .await
                .map_err(|error| format!("{error:#}"))?,
        ),
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.call(Method::POST, path, Some(body))).await {
        Err(_) => {
            *connection = None;
            Err("timed out".into())
        }
        Ok(Err(error)) => {
            *connection = None;
            Err(format!("{error:#}"))
        }
        Ok(Ok(reply)) if reply.status == StatusCode::CREATED => Ok(()),
        Ok(Ok(reply)) => Err(format!("{}: {}", reply.status, reply.text())),
    }
}

fn report_errors(samples: &[Sample]) -> usize {
    let errors: Vec<&String> = samples
        .iter()
        .filter_map(|sample| sample.error.as_ref())
        .collect();
    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    errors.len()
}

/// Open loop: a dispatcher releases one create every 1/rate seconds no
/// matter how long earlier ones take, and latency runs from release to the
/// full response. A slow server therefore shows up as queueing in the
/// figures instead of silently lowering the offered rate (the "coordinated
/// omission" a closed loop suffers from).
async fn create(
    target: &ApiTarget,
    rate: u32,
    duration: u64,
    namespace: &str,
    connections: usize,
    timeline: bool,
) -> anyhow::Result<()> {
    if rate == 0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let mut setup = target.connect().await?;
    ensure_namespace(&mut setup, namespace).await?;
    let template = Arc::new(PodTemplate::new(namespace));
    let tag = run_tag();
    let total = usize::try_from(u64::from(rate) * duration).context("too many requests")?;
    println!(
        "create: {total} pods of {} bytes into namespace {namespace} at {rate}/s for {duration} s over {connections} connections (open loop)",
        template.body("load-xxxxx-000000").len()
    );

    // Connections are opened before the clock starts so that handshakes are
    // not measured.
    let (queue, jobs) = mpsc::unbounded_channel::<(usize, Instant)>();
    let run_start = Instant::now();
    let jobs = Arc::new(Mutex::new(jobs));
    let path = Arc::new(pods_path(namespace));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut connection = Some(target.connect().await?);
        let (jobs, template, path, target, tag) = (
            jobs.clone(),
            template.clone(),
            path.clone(),
            target.clone(),
            tag.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let job = jobs.lock().await.recv().await;
                let Some((index, released)) = job else { break };
                let body = template.body(&format!("load-{tag}-{index:06}"));
                let outcome = post_pod(&target, &mut connection, &path, body).await;
                samples.push(Sample {
                    offset: released.saturating_duration_since(run_start),
                    latency: released.elapsed(),
                    error: outcome.err(),
                });
            }
            samples
        }));
    }

    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let mut max_lag = Duration::ZERO;
    for index in 0..total {
        let due = start + period.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let released = Instant::now();
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        if queue.send((index, released)).is_err() {
            bail!("every create worker has stopped");
        }
    }
    let dispatched_in = start.elapsed();
    drop(queue);
    let mut samples = Vec::with_capacity(total);
    for worker in workers {
        samples.extend(worker.await.context("a create worker panicked")?);
    }
    let finished_in = start.elapsed();

    let errors = report_errors(&samples);
    let ok = samples.len() - errors;
    let mut latencies: Vec<Duration> = samples.iter().map(|sample| sample.latency).collect();
    let summary = Summary::of(&mut latencies).context("no requests were made")?;
    println!(
        "create: {} requests, {ok} created, {errors} errors; offered {:.0}/s (dispatch took {:.2} s, max timer lag {:.2} ms), all answered after {:.2} s",
        samples.len(),
        total as f64 / dispatched_in.as_secs_f64(),
        dispatched_in.as_secs_f64(),
        ms(max_lag),
        finished_in.as_secs_f64()
    );
    println!("create latency (release to full response): {summary}");
    if timeline {
        let seconds = samples
            .iter()
            .map(|sample| sample.offset.as_secs())
            .max()
            .unwrap_or(0);
        for second in 0..=seconds {
            let mut window: Vec<Duration> = samples
                .iter()
                .filter(|sample| sample.offset.as_secs() == second)
                .map(|sample| sample.latency)
                .collect();
            if let Some(window) = Summary::of(&mut window) {
                println!(
                    "  second {second:>3}: {:>5} released, p50 {:>8.2} ms, p99 {:>8.2} ms, max {:>8.2} ms",
                    window.count,
                    ms(window.p50),
                    ms(window.p99),
                    ms(window.max)
                );
            }
        }
    }
    println!(
        "RESULT count={} created={ok} errors={errors} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        samples.len(),
        ms(summary.p50),
        ms(summary.p90),
        ms(summary.p99),
        ms(summary.max)
    );
    Ok(())
}

/// Closed loop at fixed concurrency: the create throughput the server can
/// sustain, and a quick way to store many pods.
async fn fill(
    target: &ApiTarget,
    count: usize,
    namespace: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    if concurrency == 0 {
        bail!("--concurrency must be positive");
    }
    let mut setup = target.connect().await?;
    ensure_namespace(&mut setup, namespace).await?;
    let template = Arc::new(PodTemplate::new(namespace));
    let tag = run_tag();
    println!(
        "fill: {count} pods of {} bytes into namespace {namespace} over {concurrency} connections",
        template.body("fill-xxxxx-000000").len()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let path = Arc::new(pods_path(namespace));
    // All connections first, then the clock: handshakes are not creates.
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.min(count.max(1)) {
        connections.push(target.connect().await?);
    }
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for connection in connections {
        let mut connection = Some(connection);
        let (next, template, path, target, tag) = (
            next.clone(),
            template.clone(),
            path.clone(),
            target.clone(),
            tag.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let body = template.body(&format!("fill-{tag}-{index:06}"));
                let started = Instant::now();
                let outcome = post_pod(&target, &mut connection, &path, body).await;
                samples.push(Sample {
                    offset: Duration::ZERO,
                    latency: started.elapsed(),
                    error: outcome.err(),
                });
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for worker in workers {
        samples.extend(worker.await.context("a fill worker panicked")?);
    }
    let elapsed = started.elapsed();
    let errors = report_errors(&samples);
    let ok = samples.len() - errors;
    let rate = ok as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let mut latencies: Vec<Duration> = samples.iter().map(|sample| sample.latency).collect();
    match Summary::of(&mut latencies) {
        Some(summary) => {
            println!(
                "fill: {ok} created, {errors} errors in {:.2} s ({rate:.0} creates/s)",
                elapsed.as_secs_f64()
            );
            println!("fill latency: {summary}");
            println!(
                "RESULT created={ok} errors={errors} seconds={:.3} per_second={rate:.0} p50_ms={:.3} p99_ms={:.3}",
                elapsed.as_secs_f64(),
                ms(summary.p50),
                ms(summary.p99)
            );
        }
        None => {
            println!("fill: nothing to create");
            println!("RESULT created=0 errors=0 seconds=0 per_second=0 p50_ms=0 p99_ms=0");
        }
    }
    Ok(())
}

async fn list(target: &ApiTarget, repeat: usize, namespace: &str) -> anyhow::Result<()> {
    if repeat == 0 {
        bail!("--repeat must be positive");
    }
    let mut connection = target.connect().await?;
    let path = pods_path(namespace);
    println!("list: GET {path} as JSON, {repeat} times on one keep-alive connection");
    let mut times = Vec::with_capacity(repeat);
    let mut last_body = Bytes::new();
    for _ in 0..repeat {
        let started = Instant::now();
        let reply =
            tokio::time::timeout(REQUEST_TIMEOUT, connection.call(Method::GET, &path, None))
                .await
                .context("list timed out")??;
        let elapsed = started.elapsed();
        if reply.status != StatusCode::OK {
            bail!("list answered {}: {}", reply.status, reply.text());
        }
        times.push(elapsed);
        last_body = reply.body;
    }
    // Counted outside the timed window: the figure is the server's, not
    // this client's JSON parser's.
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<serde::de::IgnoredAny>,
    }
    let items: Items =
        serde_json::from_slice(&last_body).context("the list body is not a pod list")?;
    let summary = Summary::of(&mut times).context("no lists were timed")?;
    let megabytes = last_body.len() as f64 / (1024.0 * 1024.0);
    println!(
        "list: {} items, {:.2} MiB body ({} bytes per item); min {:.1} ms, median {:.1} ms, max {:.1} ms",
        items.items.len(),
        megabytes,
        last_body.len() / items.items.len().max(1),
        ms(summary.min),
        ms(summary.p50),
        ms(summary.max)
    );
    println!(
        "RESULT items={} bytes={} min_ms={:.3} median_ms={:.3} max_ms={:.3}",
        items.items.len(),
        last_body.len(),
        ms(summary.min),
        ms(summary.p50),
        ms(summary.max)
    );
    Ok(())
}

/// The name of the object in one watch event line.
fn event_object_name(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Line {
        object: Object,
    }
    serde_json::from_slice::<Line>(line)
        .ok()?
        .object
        .metadata?
        .name
}

/// A watch event's arrival at one watcher.
struct Arrival {
    name: String,
    at: Instant,
}

/// Reads one watch stream, reporting the arrival of each event. The arrival
/// time is taken as the chunk holding the end of the line is read, before
/// the line is parsed.
async fn read_watch(
    mut body: hyper::body::Incoming,
    arrivals: mpsc::UnboundedSender<Arrival>,
    _connection: Connection,
) {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let at = Instant::now();
        let Ok(frame) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(name) = event_object_name(&line) {
                if arrivals.send(Arrival { name, at }).is_err() {
                    return;
                }
            }
        }
    }
}

async fn watch_fanout(
    target: &ApiTarget,
    watchers: usize,
    writes: usize,
    namespace: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    if watchers == 0 || writes == 0 {
        bail!("--watchers and --writes must be positive");
    }
    let mut writer = target.connect().await?;
    ensure_namespace(&mut writer, namespace).await?;
    let path = pods_path(namespace);
    let listed = writer.call(Method::GET, &path, None).await?;
    if listed.status != StatusCode::OK {
        bail!("list answered {}: {}", listed.status, listed.text());
    }
    let revision = list_resource_version(&listed.body)?;
    println!("watch-fanout: {watchers} watches on {path} from resourceVersion {revision}, then {writes} pod creates one at a time");

    let (arrivals, mut arrived) = mpsc::unbounded_channel::<Arrival>();
    let watch_path = format!("{path}?watch=true&resourceVersion={revision}");
    for _ in 0..watchers {
        let mut connection = target.connect().await?;
        // The server answers the head only once the watch is registered with
        // the store, so every watcher is live before the first write.
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            connection.send(Method::GET, &watch_path, None),
        )
        .await
        .context("watch request timed out")??;
        if response.status() != StatusCode::OK {
            bail!("watch answered {}", response.status());
        }
        tokio::spawn(read_watch(
            response.into_body(),
            arrivals.clone(),
            connection,
        ));
    }
    drop(arrivals);

    let template = PodTemplate::new(namespace);
    let tag = run_tag();
    let mut samples = Vec::with_capacity(watchers * writes);
    let mut slowest_per_write = Vec::with_capacity(writes);
    // Arrival minus the first arrival of the same write: what delivering to
    // many watchers adds, apart from the durable write every event waits for.
    let mut spread = Vec::with_capacity(watchers * writes);
    let mut acks = Vec::with_capacity(writes);
    let mut missing = 0usize;
    for index in 0..writes {
        let name = format!("fanout-{tag}-{index:04}");
        let body = template.body(&name);
        let sent = Instant::now();
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            writer.call(Method::POST, &path, Some(body)),
        )
        .await
        .context("create timed out")??;
        acks.push(sent.elapsed());
        if reply.status != StatusCode::CREATED {
            bail!("create answered {}: {}", reply.status, reply.text());
        }
        let mut seen = 0usize;
        let mut slowest = Duration::ZERO;
        let mut arrivals_of_write = Vec::with_capacity(watchers);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen < watchers {
            match tokio::time::timeout_at(deadline, arrived.recv()).await {
                Ok(Some(arrival)) if arrival.name == name => {
                    let latency = arrival.at.saturating_duration_since(sent);
                    slowest = slowest.max(latency);
                    samples.push(latency);
                    arrivals_of_write.push(arrival.at);
                    seen += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("every watch stream has ended"),
                Err(_) => {
                    missing += watchers - seen;
                    break;
                }
            }
        }
        slowest_per_write.push(slowest);
        if let Some(first) = arrivals_of_write.iter().min() {
            spread.extend(
                arrivals_of_write
                    .iter()
                    .map(|at| at.saturating_duration_since(*first)),
            );
        }
        tokio::time::sleep(interval).await;
    }

    let all = Summary::of(&mut samples).context("no watch event arrived")?;
    let last = Summary::of(&mut slowest_per_write).context("no writes")?;
    let ack = Summary::of(&mut acks).context("no writes")?;
    let spread = Summary::of(&mut spread).context("no watch event arrived")?;
    println!("watch-fanout: event arrival after the write was sent, over watcher x write: {all}");
    println!("watch-fanout: time until the last watcher had it, per write: {last}");
    println!("watch-fanout: create response time: {ack}");
    println!("watch-fanout: arrival after the first watcher's arrival of the same write: {spread}");
    if missing > 0 {
        println!("watch-fanout: {missing} events never arrived within 10 s");
    }
    println!(
        "RESULT samples={} missing={missing} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} last_watcher_p99_ms={:.3} ack_p50_ms={:.3} spread_p99_ms={:.3}",
        all.count,
        ms(all.p50),
        ms(all.p99),
        ms(all.max),
        ms(last.p99),
        ms(ack.p50),
        ms(spread.p99)
    );
    Ok(())
}
