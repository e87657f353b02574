//! `skiff-store-bench`: durable write throughput of the control plane's
//! embedded store, shaped like `etcdctl check perf`.
//!
//! `etcdctl check perf` starts N clients that each put a key and wait for
//! the answer, in a loop; keys are a fixed prefix plus 256 random bytes and
//! values are 1024 zero bytes; `--load=l` means 500 clients, a 60 s run and a
//! client-side rate limit of 8,000 writes/s (`s`: 50 clients, 150/s; `m`:
//! 200, 1,000/s; `xl`: 1,000, 15,000/s). The defaults here are that `l`
//! profile, except that there is no rate limit unless `--limit` is given:
//! the point is the store's capacity, and a limit would cap the figure at
//! the limit.
//!
//! Each write is a create (`Precondition::MustNotExist`) awaited to
//! completion, and the store only answers once the write is fsync-durable,
//! so every counted write is on disk, as every counted etcd put is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use rand::Rng;
use skiff_bench::stats::{ms, Summary};
use skiff_store::{KvStore, Precondition, RedbStore, RedbStoreOptions, WriteOp};
use tokio::sync::{mpsc, Mutex};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-store-bench",
    about = "Durable write throughput of the Skiff store (like etcdctl check perf)"
)]
struct Options {
    /// Directory for the store file; it must not hold a previous run's file.
    #[arg(long)]
    dir: PathBuf,
    /// Concurrent writers, each with one write in flight.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Seconds to write for.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Bytes of key after the prefix.
    #[arg(long, default_value_t = 256)]
    key_size: usize,
    /// Bytes of value.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Writes per second across all clients, as etcdctl's limiter does;
    /// 0 for none.
    #[arg(long, default_value_t = 0)]
    limit: u32,
}

const PREFIX: &str = "/skiff-store-bench/";

/// A key no other writer in this run uses: random leading digits, so that
/// inserts land all over the tree as etcdctl's random keys do, and the
/// writer and sequence number after them to rule out collisions; padded to
/// `size` bytes.
fn key(size: usize, client: usize, sequence: u64) -> String {
    let random: u64 = rand::rng().random();
    let mut key = format!("{PREFIX}{random:016x}-{client}-{sequence}-");
    let wanted = PREFIX.len() + size;
    if key.len() < wanted {
        key.extend(std::iter::repeat_n('0', wanted - key.len()));
    }
    key
}

async fn write(store: &RedbStore, key: String, value: &Bytes) -> Result<(), String> {
    let op = WriteOp::Put {
        key,
        value: value.clone(),
        precondition: Precondition::MustNotExist,
    };
    store
        .write(op)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if options.clients == 0 || options.duration == 0 {
        bail!("--clients and --duration must be positive");
    }
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("cannot create {}", options.dir.display()))?;
    let path = options.dir.join("store-bench.redb");
    if path.exists() {
        bail!(
            "{} exists; give an empty directory so every run starts from an empty store",
            path.display()
        );
    }
    // The control plane's own options: this is the store as it runs there.
    let store = Arc::new(
        RedbStore::open(&path, RedbStoreOptions::default()).context("cannot open the store")?,
    );
    let value = Bytes::from(vec![0u8; options.value_size]);
    println!(
        "store: {} clients, {} s, key {} B + prefix, value {} B, limit {}, file {}",
        options.clients,
        options.duration,
        options.key_size,
        options.value_size,
        if options.limit == 0 {
            "none".to_string()
        } else {
            format!("{}/s", options.limit)
        },
        path.display()
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.duration);
    // With a limit, one dispatcher paces the writes and clients take them
    // from a queue as long as the clients, as etcdctl does.
    let paced = if options.limit > 0 {
        let (sender, receiver) = mpsc::channel::<()>(options.clients);
        let period = Duration::from_secs_f64(1.0 / f64::from(options.limit));
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut index = 0u64;
            while Instant::now() < deadline {
                tokio::time::sleep_until(start + period.mul_f64(index as f64)).await;
                if sender.send(()).await.is_err() {
                    break;
                }
                index += 1;
            }
        });
        Some(Arc::new(Mutex::new(receiver)))
    } else {
        None
    };

    let mut clients = Vec::with_capacity(options.clients);
    for client in 0..options.clients {
        let (store, value, paced, key_size) = (
            store.clone(),
            value.clone(),
            paced.clone(),
            options.key_size,
        );
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut sequence = 0u64;
            loop {
                match &paced {
                    Some(queue) => {
                        if queue.lock().await.recv().await.is_none() {
                            break;
                        }
                    }
                    None => {
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                }
                let key = key(key_size, client, sequence);
                sequence += 1;
                let begun = Instant::now();
                let outcome = write(&store, key, &value).await;
                let latency = begun.elapsed();
                match outcome {
                    Ok(()) => latencies.push(latency),
                    Err(error) => errors.push(error),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for client in clients {
        let (mine, failed) = client.await.context("a client task panicked")?;
        latencies.extend(mine);
        errors.extend(failed);
    }
    let elapsed = started.elapsed();
    // Dropping the last handle stops the writer and closes the file.
    drop(store);
    let file_bytes = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);

    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let summary = Summary::of(&mut latencies).context("no write succeeded")?;
    println!(
        "store: {} durable writes, {} errors in {:.2} s: {rate:.0} writes/s; file {:.1} MiB",
        summary.count,
        errors.len(),
        elapsed.as_secs_f64(),
        file_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("store write latency: {summary}");
    println!(
        "RESULT writes={} errors={} writes_per_second={rate:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        summary.count,
        errors.len(),
        ms(summary.p50),
        ms(summary.p99),
        ms(summary.max)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_and_distinct() {
        let a = key(256, 3, 7);
        let b = key(256, 3, 8);
        assert_eq!(a.len(), PREFIX.len() + 256);
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
    }
}
