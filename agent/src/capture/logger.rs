//! Forwards `aya-log` records from the eBPF programs to `tracing` (via the `log` bridge that
//! `main` installs), on the tokio runtime.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// Starts forwarding; returns None (and says why at debug level) when the object has no log
/// statements compiled in.
pub fn spawn(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(err) => {
            tracing::debug!(%err, "eBPF log forwarding not started");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer fd, open and unchanged for the AsyncFd's lifetime.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            tracing::warn!(%err, "cannot poll the eBPF log ring buffer; kernel-side logs are lost");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::warn!(%err, "eBPF log forwarding stopped");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
