//! `sonde run`: capture → decode → format → output, until a signal or `--duration`.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    capture::{
        Capture, CaptureError, CaptureOptions, CounterValues, KernelCounters, ProbeStatus,
        RecordSink, decode::decode,
    },
    export::{Context, OutputFormat, writer::OutputWriter},
};

/// Batches are handed to the output thread at the end of each drain, or at this size: one
/// hand-off per wake-up in the common case.
const BATCH_BYTES: usize = 512 << 10;
/// Batches waiting for the output thread before new ones are dropped.
const OUTPUT_QUEUE: usize = 8;
/// How often kernel drop counters are checked for a warning.
const LOSS_CHECK: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub capture: CaptureOptions,
    pub output: OutputFormat,
    pub duration: Option<Duration>,
    pub stats_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("event output failed: {0}")]
    Output(std::io::Error),
    #[error("cannot write statistics to {path}: {source}")]
    Stats {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ring buffer reader failed: {0}")]
    Reader(std::io::Error),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Capture(e) => e.exit_code(),
            RunError::Stats { .. } => 73,
            _ => 1,
        }
    }
}

/// What a run did, written by `--stats-file` and logged at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunStats {
    /// Events delivered, by type.
    pub events: BTreeMap<&'static str, u64>,
    /// Records that could not be decoded (counted as lost).
    pub decode_errors: u64,
    /// Events formatted but dropped because the output could not keep up.
    pub output_dropped: u64,
    /// Non-zero kernel counters by name (losses and degraded records).
    pub kernel_counters: BTreeMap<&'static str, u64>,
    /// Everything lost on the way: kernel ring buffer + decode errors + output drops.
    pub lost: u64,
    pub probes: Vec<ProbeStatus>,
    pub missing_kernel_fields: Vec<String>,
}

struct Pipeline<'a> {
    ctx: Context,
    format: OutputFormat,
    batch: Vec<u8>,
    batch_events: u64,
    writer: OutputWriter,
    counters: &'a KernelCounters,
    events: BTreeMap<&'static str, u64>,
    decode_errors: u64,
    last_check: Instant,
    last_lost: u64,
}

impl Pipeline<'_> {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, self.writer.buffer());
        self.writer.send(batch, self.batch_events);
        self.batch_events = 0;
    }

    fn check_losses(&mut self) {
        if self.last_check.elapsed() < LOSS_CHECK {
            return;
        }
        self.last_check = Instant::now();
        let lost = self.counters.read().lost() + self.decode_errors + self.writer.dropped_events;
        if lost > self.last_lost {
            tracing::warn!(
                lost_since_last_check = lost - self.last_lost,
                lost_total = lost,
                "events lost: the ring buffer or the output cannot keep up (see --ring-buffer-size)"
            );
            self.last_lost = lost;
        }
    }
}

impl RecordSink for Pipeline<'_> {
    fn record(&mut self, data: &[u8]) {
        match decode(data) {
            Ok(ev) => {
                *self.events.entry(ev.type_name()).or_default() += 1;
                self.ctx.write(self.format, &mut self.batch, &ev);
                self.batch_events += 1;
                if self.batch.len() >= BATCH_BYTES {
                    self.flush();
                }
            }
            Err(err) => {
                if self.decode_errors == 0 {
                    tracing::warn!(%err, "undecodable record from the kernel (first occurrence)");
                }
                self.decode_errors += 1;
            }
        }
    }

    fn end_batch(&mut self, _records: usize) {
        self.flush();
        self.check_losses();
    }
}

/// Waits for SIGINT, SIGTERM, or the end of `duration`, then tells the reader to stop.
fn spawn_stopper(duration: Option<Duration>, stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        let sigterm = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => tracing::info!("duration reached, stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
            _ = sigterm => tracing::info!("terminated, stopping"),
        }
        let _ = stop.send(true);
    });
}

/// Runs the agent until stopped; `dest` receives the event stream.
pub async fn run(opts: RunOptions, dest: Box<dyn Write + Send>) -> Result<RunStats, RunError> {
    let mut capture = Capture::start(&opts.capture)?;
    let writer = OutputWriter::spawn(dest, OUTPUT_QUEUE, BATCH_BYTES).map_err(RunError::Output)?;
    let Capture {
        reader, counters, ..
    } = &mut capture;
    let mut pipeline = Pipeline {
        ctx: Context::new(),
        format: opts.output,
        batch: writer.buffer(),
        batch_events: 0,
        writer,
        counters,
        events: BTreeMap::new(),
        decode_errors: 0,
        last_check: Instant::now(),
        last_lost: 0,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stopper(opts.duration, stop_tx.clone());
    // The output going away (`sonde run | head`) also ends the run.
    let closed = pipeline.writer.closed_flag();
    tokio::spawn(async move {
        while !closed.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("output closed, stopping");
        let _ = stop_tx.send(true);
    });

    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(%err, "sd_notify READY failed");
    }
    tracing::info!("capture running");

    let read = reader.run(&mut pipeline, stop_rx).await;
    read.map_err(RunError::Reader)?;

    let Pipeline {
        writer,
        events,
        decode_errors,
        counters,
        ..
    } = pipeline;
    let output_dropped = writer.dropped_events;
    let output_result = writer.finish();
    let kernel: CounterValues = counters.read();
    let stats = RunStats {
        events,
        decode_errors,
        output_dropped,
        kernel_counters: kernel.named().collect(),
        lost: kernel.lost() + decode_errors + output_dropped,
        probes: capture.probes.clone(),
        missing_kernel_fields: capture.missing_fields.clone(),
    };
    if let Err(err) = output_result
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(RunError::Output(err));
    }
    if let Some(path) = &opts.stats_file {
        let json = serde_json::to_vec_pretty(&stats).map_err(std::io::Error::other);
        json.and_then(|j| std::fs::write(path, j))
            .map_err(|source| RunError::Stats {
                path: path.clone(),
                source,
            })?;
    }
    Ok(stats)
}
