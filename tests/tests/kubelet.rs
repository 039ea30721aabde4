//! The real kubelet client (`sonde::kube`) against the test kubelet (`kube_standin`) over real
//! HTTPS on 127.0.0.1: payloads, token rotation, every diagnosed failure, and the refresher
//! keeping the last good data. Nothing here is mocked, and nothing needs root.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::Arc,
    time::{Duration, Instant},
};

use sonde::kube::{
    KubeletClient, KubeletConfig, KubeletError, KubeletHandle, KubeletSyncState, PodSource,
    PodStore, parse_pod_list, spawn_kubelet_source,
};
use sonde_tests::kube_standin::{Fault, KubeletOptions, KubeletStandin, payloads};

// --- heap accounting (per thread, so tests running in parallel do not disturb it) ------------

struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` on this thread; returns its result, the heap peak above the start, and the heap
/// still held at the end (what `f` returned, mostly).
fn measure_heap<R>(f: impl FnOnce() -> R) -> (R, usize, isize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let result = f();
    let peak = PEAK.with(Cell::get) - start;
    let retained = LIVE.with(Cell::get) - start;
    (result, peak.max(0) as usize, retained)
}

const MIB: f64 = 1024.0 * 1024.0;

// --- helpers --------------------------------------------------------------------------------

/// The client configuration for a stand-in: its URL, CA and token file.
fn config(standin: &KubeletStandin) -> KubeletConfig {
    KubeletConfig {
        url: Some(standin.url()),
        token_file: Some(standin.token_file()),
        ca_file: Some(standin.ca_file()),
        tls_verify: true,
        timeout: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(3600),
        min_refresh_interval: Duration::from_millis(50),
        ..KubeletConfig::default()
    }
}

async fn fetch_error(config: &KubeletConfig) -> KubeletError {
    let mut client = KubeletClient::new(config).expect("configuration accepted");
    match client.fetch_pods().await {
        Ok(parsed) => panic!("expected an error, got {} pods", parsed.pods.len()),
        Err(err) => err,
    }
}

fn assert_mentions(err: &KubeletError, parts: &[&str]) {
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

async fn wait_state(
    handle: &KubeletHandle,
    what: &str,
    pred: impl FnMut(&KubeletSyncState) -> bool,
) -> KubeletSyncState {
    match tokio::time::timeout(Duration::from_secs(30), handle.wait_for(pred)).await {
        Ok(state) => state,
        Err(_) => panic!("timed out waiting for {what}; state: {:?}", handle.state()),
    }
}

// --- happy paths ----------------------------------------------------------------------------

#[tokio::test]
async fn serves_every_fixture_over_https() {
    let standin = KubeletStandin::start();
    let mut client = KubeletClient::new(&config(&standin)).expect("client");
    assert_eq!(client.url(), format!("{}/pods", standin.url()));
    let fixtures = payloads::pod_list_fixtures();
    assert!(fixtures.len() >= 12, "{fixtures:?}");
    for name in &fixtures {
        standin.set_pods_fixture(name);
        let body = client
            .fetch_pods_body()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(body, payloads::fixture(name), "{name}: served as vendored");
        let parsed = client
            .fetch_pods()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let direct = parse_pod_list(&body).expect("parses");
        assert_eq!(parsed.pods, direct.pods, "{name}");
    }
    let seen = standin.requests();
    assert_eq!(seen.len(), fixtures.len() * 2);
    assert!(seen.iter().all(|r| r.method == "GET" && r.path == "/pods"));
    assert!(
        seen.iter()
            .all(|r| r.bearer.as_deref() == Some("sonde-test-token-1"))
    );
}

#[tokio::test]
async fn pods_land_in_the_store_with_exact_metadata() {
    let standin = KubeletStandin::start();
    standin.set_pods_fixture("podlist_containerd_k8s-1.35.json");
    let store = Arc::new(PodStore::new());
    let handle = spawn_kubelet_source(config(&standin), Arc::clone(&store));
    let state = wait_state(&handle, "first sync", |s| s.successes >= 1).await;
    assert_eq!(state.pods, 24);
    assert_eq!(state.url, format!("{}/pods", standin.url()));
    assert!(state.healthy());
    assert!(state.sync.last_success.is_some());

    let found = store
        .lookup_container("facedc3f02c7efea0daff3590c408c2fb5820f875b93cb4c757df0d10d73786f")
        .expect("coredns container indexed");
    assert_eq!(found.source, PodSource::Kubelet);
    assert_eq!(found.pod.namespace, "kube-system");
    assert_eq!(found.pod.name, "coredns-7d764666f9-qdcxt");
    assert_eq!(found.pod.uid, "36447428-81f8-45eb-b825-414de2e8012b");
    let owner = found.pod.owner.as_ref().expect("owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ReplicaSet", "coredns-7d764666f9")
    );
    assert_eq!(found.container().name, "coredns");
    assert_eq!(
        found.container().image,
        "registry.k8s.io/coredns/coredns:v1.13.1"
    );
    let apiserver = store
        .lookup_pod("8ac8c3a9ee4d182b8d934f20e971ada7")
        .expect("static pod by its config-hash uid");
    assert!(apiserver.static_pod);
}

#[tokio::test]
async fn read_only_port_over_plain_http_sends_no_token() {
    let standin = KubeletStandin::start_with(KubeletOptions {
        tls: false,
        ..KubeletOptions::default()
    });
    assert!(standin.url().starts_with("http://"));
    let mut client = KubeletClient::new(&config(&standin)).expect("client");
    let parsed = client.fetch_pods().await.expect("read-only port");
    assert_eq!(parsed.pods.len(), 24);
    assert_eq!(
        standin.requests()[0].bearer,
        None,
        "a token must never go out in clear"
    );
}

#[tokio::test]
async fn certificate_for_the_node_name_verifies() {
    let standin = KubeletStandin::start_with(KubeletOptions {
        sans: vec!["localhost".into()],
        ..KubeletOptions::default()
    });
    let mut config = config(&standin);
    config.url = Some(format!("https://localhost:{}", standin.port()));
    let mut client = KubeletClient::new(&config).expect("client");
    assert_eq!(
        client
            .fetch_pods()
            .await
            .expect("verified by name")
            .pods
            .len(),
        24
    );
}

// --- tokens ---------------------------------------------------------------------------------

#[tokio::test]
async fn rotated_token_is_used_on_the_next_request() {
    let standin = KubeletStandin::start();
    let config = config(&standin);
    let mut client = KubeletClient::new(&config).expect("client");
    client.fetch_pods().await.expect("first token");

    // The kubelet stops accepting the old token before the file is rotated: 401.
    standin.set_valid_tokens(&["sonde-test-token-2-rotated"]);
    let err = client.fetch_pods().await.expect_err("old token expired");
    assert!(matches!(err, KubeletError::Unauthorized { .. }), "{err}");

    // The file is rotated (atomic rename, as the kubelet does): the next request uses it.
    standin.write_token_file("sonde-test-token-2-rotated");
    client.fetch_pods().await.expect("rotated token");
    let last = standin.requests().pop().expect("requests");
    assert_eq!(last.bearer.as_deref(), Some("sonde-test-token-2-rotated"));

    // Same length as the previous token: still noticed (new inode).
    standin.rotate_token("sonde-test-token-3-rotated");
    client.fetch_pods().await.expect("third token");
    let last = standin.requests().pop().expect("requests");
    assert_eq!(last.bearer.as_deref(), Some("sonde-test-token-3-rotated"));
}

#[tokio::test]
async fn unauthorized_names_the_token_file() {
    let standin = KubeletStandin::start();
    standin.write_token_file("not-the-right-token");
    let err = fetch_error(&config(&standin)).await;
    assert!(matches!(err, KubeletError::Unauthorized { .. }), "{err}");
    let token_file = standin.token_file().display().to_string();
    assert_mentions(
        &err,
        &[
            "401 Unauthorized",
            &token_file,
            "invalid or expired",
            "Fix:",
        ],
    );
    assert!(
        !err.to_string().contains("not-the-right-token"),
        "token leaked: {err}"
    );

    let mut no_token = config(&standin);
    no_token.token_file = None;
    let err = fetch_error(&no_token).await;
    assert!(
        matches!(err, KubeletError::UnauthorizedNoToken { .. }),
        "{err}"
    );
    assert_mentions(&err, &["kubelet.token_file is unset"]);

    let mut missing = config(&standin);
    missing.token_file = Some(standin.dir().join("no-such-token"));
    let err = fetch_error(&missing).await;
    assert!(matches!(err, KubeletError::TokenFile { .. }), "{err}");
    assert_mentions(&err, &["no-such-token", "automountServiceAccountToken"]);
}

#[tokio::test]
async fn forbidden_names_the_rbac_rule() {
    let standin = KubeletStandin::start();
    standin.set_fault(Fault::Forbidden);
    let err = fetch_error(&config(&standin)).await;
    assert!(matches!(err, KubeletError::Forbidden { .. }), "{err}");
    assert_mentions(
        &err,
        &[
            "403 Forbidden",
            "nodes/proxy",
            r#"resources: ["nodes/proxy"]"#,
            r#"verbs: ["get"]"#,
            "ClusterRole",
            "http://<node>:10255",
            "subresource(s)=[proxy]",
        ],
    );
}

// --- TLS ------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_ca_is_an_untrusted_certificate_naming_the_ca_file() {
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.ca_file = Some(standin.other_ca_file());
    let err = fetch_error(&config).await;
    assert!(
        matches!(err, KubeletError::CertificateUntrusted { .. }),
        "{err}"
    );
    let ca_file = standin.other_ca_file().display().to_string();
    assert_mentions(
        &err,
        &[
            &ca_file,
            &format!("127.0.0.1:{}", standin.port()),
            "kubelet.ca_file",
            "tls_verify: false",
        ],
    );
    assert_eq!(
        standin.pods_requests(),
        0,
        "nothing sent over an untrusted connection"
    );
}

#[tokio::test]
async fn tls_verify_false_accepts_the_wrong_ca() {
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.ca_file = Some(standin.other_ca_file());
    config.tls_verify = false;
    let mut client = KubeletClient::new(&config).expect("client");
    assert_eq!(
        client
            .fetch_pods()
            .await
            .expect("unverified TLS")
            .pods
            .len(),
        24
    );
}

#[tokio::test]
async fn san_mismatch_names_the_name_used() {
    let standin = KubeletStandin::start_with(KubeletOptions {
        sans: vec!["node-a.example".into(), "node-a".into()],
        ..KubeletOptions::default()
    });
    let err = fetch_error(&config(&standin)).await;
    assert!(
        matches!(err, KubeletError::CertificateNameMismatch { .. }),
        "{err}"
    );
    assert_mentions(
        &err,
        &[
            "not valid for the name 127.0.0.1",
            "holds: node-a.example, node-a)",
            "kubelet.url",
            "tls_verify: false",
        ],
    );
}

#[tokio::test]
async fn missing_or_empty_ca_file_is_a_config_error() {
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.ca_file = Some(standin.dir().join("no-ca.crt"));
    let err = KubeletClient::new(&config).expect_err("missing CA");
    assert!(
        matches!(err, KubeletError::CaFile { .. }) && err.is_config(),
        "{err}"
    );
    assert_mentions(&err, &["no-ca.crt", "kubelet.ca_file"]);
    let empty = standin.dir().join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    config.ca_file = Some(empty);
    let err = KubeletClient::new(&config).expect_err("empty CA");
    assert_mentions(&err, &["empty.crt", "holds no PEM certificate"]);
}

// --- network and HTTP failures ----------------------------------------------------------------

#[tokio::test]
async fn slow_kubelet_times_out_naming_host_port_and_timeout() {
    let standin = KubeletStandin::start();
    standin.set_fault(Fault::Delay(Duration::from_secs(20)));
    let mut config = config(&standin);
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = fetch_error(&config).await;
    let took = started.elapsed();
    assert!(matches!(err, KubeletError::Timeout { .. }), "{err}");
    assert_mentions(
        &err,
        &[
            &format!("127.0.0.1:{}", standin.port()),
            "300ms",
            "kubelet.timeout",
            "answer GET /pods",
        ],
    );
    assert!(took < Duration::from_secs(5), "the timeout held: {took:?}");
}

#[tokio::test]
async fn refused_connection_names_host_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.url = Some(format!("https://127.0.0.1:{port}"));
    let err = fetch_error(&config).await;
    assert!(matches!(err, KubeletError::ConnectRefused { .. }), "{err}");
    assert_mentions(&err, &[&format!("127.0.0.1:{port}"), "10250"]);
}

/// A loopback listener that never accepts, with its backlog full: a further connect hangs
/// (the kernel drops its SYN), as one to a firewalled port does. Returns the socket (keep it
/// open), its port, and the connections that filled the backlog.
fn unresponsive_port() -> (std::os::fd::OwnedFd, u16, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a socket this function owns; every result is checked.
    let (fd, port) = unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = std::os::fd::OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let ptr = &addr as *const libc::sockaddr_in as *const libc::sockaddr;
        assert_eq!(
            libc::bind(raw, ptr, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::listen(raw, 0),
            0,
            "listen: {}",
            std::io::Error::last_os_error()
        );
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut bound_len = len;
        let bound_ptr = &mut bound as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::getsockname(raw, bound_ptr, &mut bound_len), 0);
        (fd, u16::from_be(bound.sin_port))
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => return (fd, port, fillers),
        }
    }
    panic!("the backlog of 127.0.0.1:{port} never filled; cannot simulate a silent port");
}

#[tokio::test]
async fn unresponsive_port_is_a_connect_timeout() {
    let (_socket, port, _fillers) = unresponsive_port();
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.url = Some(format!("https://127.0.0.1:{port}"));
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = fetch_error(&config).await;
    assert!(matches!(err, KubeletError::ConnectTimeout { .. }), "{err}");
    assert_mentions(
        &err,
        &[
            &format!("127.0.0.1:{port}"),
            "timed out after 300ms",
            "firewall",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn plain_http_port_with_https_url_is_diagnosed() {
    let standin = KubeletStandin::start_with(KubeletOptions {
        tls: false,
        ..KubeletOptions::default()
    });
    let mut config = config(&standin);
    config.url = Some(format!("https://127.0.0.1:{}", standin.port()));
    let err = fetch_error(&config).await;
    assert!(matches!(err, KubeletError::Tls { .. }), "{err}");
    assert_mentions(&err, &["http://"]);
}

#[tokio::test]
async fn malformed_json_and_cut_body_are_reported() {
    let standin = KubeletStandin::start();
    standin.set_pods_fixture("invalid.json");
    let err = fetch_error(&config(&standin)).await;
    assert!(matches!(err, KubeletError::Malformed { .. }), "{err}");
    assert_mentions(&err, &["malformed /pods body", "13 bytes", "invalid file"]);

    standin.set_pods_fixture("podlist_containerd_k8s-1.35.json");
    standin.set_fault(Fault::CutMidBody);
    let err = fetch_error(&config(&standin)).await;
    assert!(matches!(err, KubeletError::BodyCut { .. }), "{err}");
    let total = payloads::fixture("podlist_containerd_k8s-1.35.json").len();
    assert_mentions(
        &err,
        &["closed the connection after", &format!("of {total} bytes")],
    );

    standin.set_fault(Fault::Status(500));
    let err = fetch_error(&config(&standin)).await;
    assert!(matches!(err, KubeletError::Status { .. }), "{err}");
    assert_mentions(&err, &["500 Internal Server Error"]);
}

#[tokio::test]
async fn refresher_keeps_the_last_good_list_through_failures() {
    let standin = KubeletStandin::start();
    let store = Arc::new(PodStore::new());
    let handle = spawn_kubelet_source(config(&standin), Arc::clone(&store));
    wait_state(&handle, "first sync", |s| s.successes == 1).await;
    let coredns = "facedc3f02c7efea0daff3590c408c2fb5820f875b93cb4c757df0d10d73786f";
    assert!(store.lookup_container(coredns).is_some());

    // Malformed JSON: reported, data kept.
    standin.set_pods_fixture("invalid.json");
    handle.request_refresh();
    let state = wait_state(&handle, "malformed failure", |s| s.sync.failures >= 1).await;
    assert!(
        state
            .sync
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("malformed")),
        "{state:?}"
    );
    assert_eq!(state.pods, 24);
    assert!(!state.healthy());
    assert!(
        store.lookup_container(coredns).is_some(),
        "last good list kept"
    );

    // A body cut mid-way: reported, data kept.
    standin.set_pods_fixture("podlist_crio_gpu.json");
    standin.set_fault(Fault::CutMidBody);
    handle.request_refresh();
    let state = wait_state(&handle, "cut failure", |s| s.sync.failures >= 2).await;
    assert!(
        state
            .sync
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("closed the connection after")),
        "{state:?}"
    );
    assert_eq!(
        store.counts(PodSource::Kubelet).pods,
        24,
        "last good list kept"
    );

    // Recovery: the new list replaces the old one.
    standin.set_fault(Fault::None);
    handle.request_refresh();
    let state = wait_state(&handle, "recovery", |s| s.successes >= 2).await;
    assert_eq!(state.sync.consecutive_failures, 0);
    assert_eq!(state.pods, 2);
    assert!(store.lookup_container(coredns).is_none());
    assert!(
        store
            .lookup_container("1767d1fd8561642f818e16f411e6b1c61b77caabfe848266f2a44685eb782016")
            .is_some()
    );
}

#[tokio::test]
async fn on_demand_refreshes_are_rate_limited() {
    let standin = KubeletStandin::start();
    let mut config = config(&standin);
    config.min_refresh_interval = Duration::from_millis(300);
    let store = Arc::new(PodStore::new());
    let handle = spawn_kubelet_source(config, store);
    wait_state(&handle, "first sync", |s| s.successes == 1).await;
    let started = Instant::now();
    // An event storm naming unknown containers: 200 requests in about a second. (Time is
    // what is under test here: the storm's pace and length, and the window after it.)
    while started.elapsed() < Duration::from_millis(1000) {
        handle.request_refresh();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The window in which a fetch deferred by the limit lands: a rate limit is a bound over
    // time, and "no further fetch" has no signal to wait on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fetches = standin.pods_requests();
    // 1 initial + at most one per 300 ms over ~1.4 s.
    assert!((2..=7).contains(&fetches), "{fetches} fetches");
}

// --- scale ----------------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_pods() {
    let body = payloads::generate_pod_list(10_000);

    let ((parsed, parse_time), parse_peak, parse_retained) = measure_heap(|| {
        let started = Instant::now();
        let parsed = parse_pod_list(&body).expect("10k list parses");
        (parsed, started.elapsed())
    });
    assert_eq!(parsed.pods.len(), 10_000);
    assert_eq!(parsed.skipped, 0);
    let store = PodStore::new();
    let (counts, index_peak, store_retained) =
        measure_heap(|| store.replace(PodSource::Kubelet, parsed.pods));
    assert_eq!(counts.pods, 10_000);
    let id = payloads::generated_container_id(4321, 0);
    let found = store
        .lookup_container(&id)
        .expect("generated container indexed");
    assert_eq!(found.pod.uid, payloads::generated_uid(4321));
    eprintln!(
        "10k pods: body {:.1} MiB; parse {:?}, heap peak {:.1} MiB, pods kept {:.1} MiB \
         ({:.0} B/pod); index build peak {:.1} MiB, index {:.1} MiB",
        body.len() as f64 / MIB,
        parse_time,
        parse_peak as f64 / MIB,
        parse_retained as f64 / MIB,
        parse_retained as f64 / 10_000.0,
        index_peak as f64 / MIB,
        store_retained as f64 / MIB,
    );
    // What is kept is a small fraction of the payload (the model is stripped): about 2 KB a
    // pod, most of it labels (a BTreeMap node each) and container ids/images.
    assert!(
        parse_retained < 10_000 * 2560,
        "pods kept {parse_retained} B for a {} B body",
        body.len()
    );
    // Parsing does not hold a second copy of the payload.
    assert!(parse_peak < body.len() / 2, "parse peak {parse_peak} B");

    // And end to end over HTTPS.
    let standin = KubeletStandin::start();
    standin.set_pods_bytes(body);
    let mut config = config(&standin);
    config.timeout = Duration::from_secs(120);
    let mut client = KubeletClient::new(&config).expect("client");
    let started = Instant::now();
    let fetched = client.fetch_pods().await.expect("10k pods over HTTPS");
    eprintln!("10k pods over HTTPS: fetch + parse {:?}", started.elapsed());
    assert_eq!(fetched.pods.len(), 10_000);
}

// --- client certificates ------------------------------------------------------------------

/// A kubelet that requires a client certificate: an untrusted one is refused with the fix
/// naming `kubelet.client_cert_file`; the file replaced by a trusted one (as the kubelet
/// rotates `kubelet-client-current.pem`) is used on the next request, with no token sent.
#[tokio::test]
async fn client_certificate_is_presented_and_its_rotation_followed() {
    let standin = KubeletStandin::start_with(KubeletOptions {
        client_certs: true,
        ..KubeletOptions::default()
    });
    let untrusted = standin.write_client_cert("stranger", false);
    let pem = standin.dir().join("kubelet-client-current.pem");
    std::fs::copy(&untrusted, &pem).expect("copy");
    let mut config = config(&standin);
    config.token_file = None;
    config.client_cert_file = Some(pem.clone());
    config.client_key_file = Some(pem.clone());
    let mut client = KubeletClient::new(&config).expect("client");
    let err = client
        .fetch_pods()
        .await
        .expect_err("untrusted client certificate");
    assert_mentions(
        &err,
        &["rejected the handshake", "kubelet.client_cert_file"],
    );

    let trusted = standin.write_client_cert("system:node:n1", true);
    let aside = standin.dir().join("kubelet-client-new.pem");
    std::fs::copy(&trusted, &aside).expect("copy");
    std::fs::rename(&aside, &pem).expect("rotate");
    let parsed = client.fetch_pods().await.expect("rotated certificate");
    assert_eq!(parsed.pods.len(), 24);
    assert!(standin.requests().iter().all(|r| r.bearer.is_none()));

    // A client certificate file that is not PEM: the configuration error names both files.
    std::fs::write(standin.dir().join("broken.pem"), "nothing\n").expect("write");
    config.client_cert_file = Some(standin.dir().join("broken.pem"));
    let err = KubeletClient::new(&config).expect_err("no certificate");
    assert_mentions(&err, &["broken.pem", "kubelet.client_cert_file"]);
}
