//! Streaming the exposition: the encoder writes into fixed-size chunks handed to a consumer as
//! they fill, so a scrape of many series never holds the whole text (megabytes for thousands of
//! containers) in memory at once.

use std::fmt;

use bytes::{Bytes, BytesMut};
use prometheus_client::{encoding::prometheus_text, registry::Registry};

/// Size of one chunk of the response body.
pub const CHUNK_BYTES: usize = 128 << 10;

/// A [`fmt::Write`] that cuts its input into chunks of about [`CHUNK_BYTES`] and passes each
/// to `sink`; a sink error (the client went away, or is too slow) stops the encoding.
struct Chunker<F> {
    buf: BytesMut,
    sink: F,
}

impl<F: FnMut(Bytes) -> Result<(), ()>> Chunker<F> {
    fn emit(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        (self.sink)(chunk).map_err(|()| fmt::Error)
    }
}

impl<F: FnMut(Bytes) -> Result<(), ()>> fmt::Write for Chunker<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.extend_from_slice(s.as_bytes());
        if self.buf.len() >= CHUNK_BYTES {
            self.emit()?;
        }
        Ok(())
    }
}

/// Encodes `registry` in the Prometheus text format, passing chunks to `sink` as they fill.
pub fn encode_chunked(
    registry: &Registry,
    sink: impl FnMut(Bytes) -> Result<(), ()>,
) -> fmt::Result {
    let mut out = Chunker {
        buf: BytesMut::with_capacity(CHUNK_BYTES),
        sink,
    };
    prometheus_text::encode(&mut out, registry)?;
    out.emit()
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn chunks_reassemble_to_the_whole_exposition() {
        let mut registry = Registry::default();
        for i in 0..5000 {
            let c: Counter = Counter::default();
            c.inc_by(i);
            registry.register(format!("c{i}"), "a counter", c);
        }
        let mut whole = String::new();
        prometheus_text::encode(&mut whole, &registry).expect("encodes");
        let mut chunks = Vec::new();
        encode_chunked(&registry, |c| {
            chunks.push(c);
            Ok(())
        })
        .expect("encodes");
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= 2 * CHUNK_BYTES));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, whole.as_bytes());
        // A sink that fails stops the encoding with an error.
        assert!(encode_chunked(&registry, |_| Err(())).is_err());
    }
}
