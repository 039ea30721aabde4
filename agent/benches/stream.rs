//! Event stream throughput: synthetic attributed events (NDJSON lines of a typical size, with
//! filter keys) published through the fan-out ([`StreamHub`]) and served by the real API
//! server (hyper, one tokio thread) over loopback HTTP to a reader that discards them.
//! Run by `cargo xtask bench`; prints events/s for an unfiltered and a filtered reader.
//!
//! The publisher stays at most a few batches ahead of the reader (flow control of the bench
//! only): the figure is what a reader that keeps up receives, not what a dropped one missed.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sonde::{
    api::{self, ApiConfig, ApiState},
    export::{
        fanout::{EventsConfig, STREAM_BATCH_BYTES, StreamHub},
        filter::FilterKeys,
    },
    node::{cgroup::CgroupInfo, cgroup_path::CgroupIdentity},
};

const EVENTS: u64 = 4_000_000;
/// Batches the publisher may be ahead of the reader.
const WINDOW: u64 = 16;

fn line(container: &str) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"type":"process_exec","time":"2026-11-28T10:34:25.746525883Z","pid":15342,"#,
            r#""tid":15342,"start_time_ns":25327270302953,"uid":0,"comm":"true","ppid":15247,"#,
            r#""parent_start_time_ns":25323754171852,"cgroup_id":4242,"filename":"/bin/true","#,
            r#""args":["/bin/true","--flag"],"args_truncated":false,"#,
            r#""cgroup_path":"/system.slice/docker-{c}.scope","container_id":"{c}","#,
            r#""runtime":"docker","pod_uid":null,"qos":null,"systemd_unit":null,"#,
            r#""systemd_slice":"system.slice"}}"#,
            "\n"
        ),
        c = container
    )
    .into_bytes()
}

fn keys(id: u64, container: &str) -> FilterKeys {
    FilterKeys {
        cgroup: Some(Arc::new(CgroupInfo {
            id,
            path: format!("/system.slice/docker-{container}.scope").into(),
            identity: CgroupIdentity {
                container_id: Some(container.to_string()),
                ..CgroupIdentity::default()
            },
        })),
        kube: None,
        event: None,
    }
}

/// Reads the chunked response until `want` body bytes arrived (framing bytes are counted
/// too; they are ~10 per 128 KiB chunk).
fn reader(addr: SocketAddr, query: &str, received: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    let query = query.to_string();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect to the API");
        write!(
            s,
            "GET /v1/events{query} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    received.fetch_add(n as u64, Ordering::Release);
                }
            }
        }
    })
}

fn measure(label: &str, query: &str, matching_every: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = ApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ApiConfig::default()
    };
    let events = EventsConfig::default();
    let listener = runtime.block_on(api::bind(&opts)).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (mut hub, handle) = StreamHub::new(events.subscriber_buffer, events.max_subscribers);
    let (_status_tx, status_rx) = sonde::pipeline::health::channel(Default::default());
    let server_thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let (server, _stats) = api::serve(
                listener,
                &opts,
                &events,
                ApiState {
                    tls: None,
                    stream: handle,
                    token: None,
                    status: status_rx,
                },
            );
            let _ = server.await;
        })
    });

    let wanted_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let other_id = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    let (wanted, other) = (line(wanted_id), line(other_id));
    assert_eq!(wanted.len(), other.len());
    let (wanted_keys, other_keys) = (keys(1, wanted_id), keys(2, other_id));
    let received = Arc::new(AtomicU64::new(0));
    let reader = reader(addr, query, Arc::clone(&received));
    while !hub.wanted() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let line_len = wanted.len() as u64;
    let per_batch = STREAM_BATCH_BYTES as u64 / line_len;
    let expected_bytes = EVENTS / matching_every * line_len;
    let started = Instant::now();
    let mut sent_matching = 0u64;
    for i in 0..EVENTS {
        if i % matching_every == 0 {
            hub.push_line("process_exec", &wanted, wanted_keys.clone());
            sent_matching += 1;
        } else {
            hub.push_line("process_exec", &other, other_keys.clone());
        }
        if i % per_batch == per_batch - 1 {
            hub.publish();
            // Flow control: stay within WINDOW batches of what the reader got.
            // (a batch carries per_batch / matching_every lines for this reader)
            let window = WINDOW * per_batch * line_len / matching_every;
            let ahead = |r: u64| sent_matching * line_len > r + window;
            while ahead(received.load(Ordering::Acquire)) {
                assert_eq!(hub.stats().subscribers_dropped, 0, "the reader was dropped");
                std::hint::spin_loop();
            }
        }
    }
    hub.publish();
    while received.load(Ordering::Acquire) < expected_bytes {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the reader stalled"
        );
        std::hint::spin_loop();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let dropped = hub.stats().subscribers_dropped;
    let delivered = EVENTS / matching_every;
    println!(
        "event stream {label}: {:.0} events/s delivered ({:.0} MB/s, {} B lines, {} of {} \
         events match; publisher scanned {:.0} events/s), {dropped} subscribers dropped",
        delivered as f64 / elapsed,
        received.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
        line_len,
        delivered,
        EVENTS,
        EVENTS as f64 / elapsed,
    );
    drop(hub);
    let _ = reader.join();
    drop(server_thread);
}

fn main() {
    measure("to a fast reader (no filter)", "", 1);
    measure(
        "to a fast reader (?container=, 1 in 4 events match)",
        "?container=0123456789ab",
        4,
    );
}
