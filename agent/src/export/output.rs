//! The event stream on stdout or in a file: each event formatted (text or NDJSON) into a batch,
//! batches handed to the writer thread ([`OutputWriter`]) at the end of each drain or when full.
//! A destination slower than the kernel loses whole batches, counted as `output_dropped`.

use super::{OutputFormat, writer::OutputWriter};
use crate::{
    node::NodeModel,
    pipeline::{
        health::Health,
        sink::{Attributed, BatchEnd, Formatter, Sink, SinkError},
    },
};

/// `output.*`: the event stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    pub format: OutputFormatSetting,
    /// NDJSON/text to this file (appended) instead of stdout.
    pub file: Option<std::path::PathBuf>,
    /// Rotate `file` at this size in bytes; 0: never.
    #[serde(with = "crate::units::size")]
    pub rotate_size: u64,
    /// Rotated files kept (`FILE.1` … `FILE.N`).
    pub rotate_keep: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            format: OutputFormatSetting::Auto,
            file: None,
            rotate_size: 100 << 20,
            rotate_keep: 5,
        }
    }
}

/// `output.format`: `auto` is text on a terminal and NDJSON otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormatSetting {
    #[default]
    Auto,
    Text,
    Json,
}

impl OutputFormatSetting {
    pub fn resolve(self, stdout_is_terminal: bool) -> super::OutputFormat {
        match self {
            Self::Text => OutputFormat::Text,
            Self::Json => OutputFormat::Json,
            Self::Auto if stdout_is_terminal => OutputFormat::Text,
            Self::Auto => OutputFormat::Json,
        }
    }
}

/// Batches are handed to the output thread at the end of each drain, or at this size: one
/// hand-off per wake-up in the common case.
pub const BATCH_BYTES: usize = 512 << 10;
/// Batches waiting for the output thread before new ones are dropped.
pub const OUTPUT_QUEUE: usize = 8;

/// Writes batches of bytes to the output thread; shared by the event stream and the
/// `--summary` table.
pub struct Batcher {
    batch: Vec<u8>,
    events: u64,
    writer: OutputWriter,
}

impl Batcher {
    pub fn new(writer: OutputWriter) -> Self {
        Self {
            batch: writer.buffer(),
            events: 0,
            writer,
        }
    }

    /// The batch being filled; call [`Self::added`] for each event written into it.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.batch
    }

    /// One more event is in the batch; hands the batch over when full.
    pub fn added(&mut self) {
        self.events += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Hands the batch to the output thread (or counts it dropped).
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, self.writer.buffer());
        self.writer.send(batch, self.events);
        self.events = 0;
    }

    /// Events dropped because the destination could not keep up.
    pub fn dropped(&self) -> u64 {
        self.writer.dropped_events
    }

    /// Flushes and waits for the output thread; a reader that went away is not an error.
    pub fn finish(mut self) -> Result<(), SinkError> {
        self.flush();
        match self.writer.finish() {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(SinkError::Output(err)),
            _ => Ok(()),
        }
    }
}

/// The event stream sink.
pub struct EventOutput {
    format: OutputFormat,
    out: Batcher,
}

impl EventOutput {
    pub fn new(format: OutputFormat, writer: OutputWriter) -> Self {
        Self {
            format,
            out: Batcher::new(writer),
        }
    }
}

impl Sink for EventOutput {
    fn event(&mut self, ev: &Attributed<'_>, fmt: &mut Formatter) {
        match self.format {
            OutputFormat::Json => {
                let line = fmt.json(ev);
                self.out.buffer().extend_from_slice(line);
            }
            OutputFormat::Text => fmt.text(ev, self.out.buffer()),
        }
        self.out.added();
    }

    fn end_batch(&mut self, _end: &BatchEnd<'_>) {
        self.out.flush();
    }

    fn health(&mut self, _node: &NodeModel, health: &mut Health) {
        health.output_dropped = self.out.dropped();
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.out.finish()
    }
}
