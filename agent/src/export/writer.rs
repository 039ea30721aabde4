//! Output off the capture path: formatted batches go through a bounded channel to a writer
//! thread. If the destination is slower than the kernel, batches are dropped and counted
//! (rule 3), never allowed to stall the ring buffer drain. Written buffers come back to be
//! refilled, so steady-state output allocates nothing.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

pub struct OutputWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Buffers the writer thread is done with.
    free: Receiver<Vec<u8>>,
    capacity: usize,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    closed: Arc<AtomicBool>,
    /// Events in batches that could not be queued.
    pub dropped_events: u64,
}

impl OutputWriter {
    /// Starts the writer thread; at most `queue` batches of about `capacity` bytes wait for it.
    pub fn spawn(
        mut dest: Box<dyn Write + Send>,
        queue: usize,
        capacity: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(queue);
        let (free_tx, free) = sync_channel::<Vec<u8>>(queue + 1);
        let closed = Arc::new(AtomicBool::new(false));
        let closed_in_thread = Arc::clone(&closed);
        let thread = std::thread::Builder::new()
            .name("sonde-output".into())
            .spawn(move || {
                let result = (|| {
                    for mut batch in rx {
                        dest.write_all(&batch)?;
                        dest.flush()?;
                        batch.clear();
                        let _ = free_tx.try_send(batch);
                    }
                    Ok(())
                })();
                if result.is_err() {
                    // A reader that went away (`sonde run | head`) ends the run.
                    closed_in_thread.store(true, Ordering::Release);
                }
                result
            })?;
        Ok(Self {
            tx: Some(tx),
            free,
            capacity,
            thread: Some(thread),
            closed,
            dropped_events: 0,
        })
    }

    /// An empty buffer to fill: a returned one, or a new one.
    pub fn buffer(&self) -> Vec<u8> {
        self.free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.capacity))
    }

    /// Queues a batch holding `events` events; false if it had to be dropped.
    pub fn send(&mut self, batch: Vec<u8>, events: u64) -> bool {
        let Some(tx) = &self.tx else {
            self.dropped_events += events;
            return false;
        };
        match tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_events += events;
                false
            }
        }
    }

    /// Set once the destination stopped accepting output (closed pipe, write error).
    pub fn closed_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.closed)
    }

    /// Flushes everything queued and stops the thread.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.tx.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("output thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
