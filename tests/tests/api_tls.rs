//! The API over HTTPS (`api.tls_cert_file`, `api.tls_key_file`): a real client (curl) reads
//! `/v1/status` and `/v1/events` with the CA and the bearer token; plain HTTP to the HTTPS port
//! is refused and counted; `sonde status` speaks HTTPS from the agent's configuration and names
//! the fix when it cannot trust the certificate; a renewed certificate (files replaced, as a
//! Secret update does) is served without a restart; unusable files stop the agent with 78.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    agent::{Agent, client_json, sonde_bin},
    api::free_loopback_addr,
    kube_standin::pki::TestCa,
    poll::poll_until,
};

const TOKEN: &str = "https-test-token";

/// `curl` over HTTPS: (HTTP status, body), or curl's error when the exchange failed.
fn curl(addr: SocketAddr, target: &str, ca: &Path) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{addr}{target}"))
        .output()
        .expect("run curl (installed by cargo xtask setup)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').ok_or_else(|| text.clone())?;
    Ok((
        code.trim().parse().map_err(|_| text.clone())?,
        body.to_string(),
    ))
}

fn status_over_https(addr: SocketAddr, ca: &Path) -> Result<Value, String> {
    match curl(addr, "/v1/status", ca)? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        (code, body) => Err(format!("{code}: {body}")),
    }
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token");
        Files { dir }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn sets(&self) -> Vec<String> {
        [
            ("api.token_file", "token"),
            ("api.tls_cert_file", "tls.crt"),
            ("api.tls_key_file", "tls.key"),
        ]
        .iter()
        .flat_map(|(key, file)| {
            [
                "--set".to_string(),
                format!("{key}={}", self.path(file).display()),
            ]
        })
        .collect()
    }
}

#[test]
fn the_api_serves_https_with_a_renewable_certificate() {
    let files = Files::new();
    let first = TestCa::new("sonde-api-ca-1");
    first.write_pem(&files.path("ca1.crt"));
    first
        .issue_server_cert(&["127.0.0.1", "sonde.example"])
        .write_pem(&files.path("tls.crt"), &files.path("tls.key"));
    let addr = free_loopback_addr();
    let listen = addr.to_string();
    let sets = files.sets();
    let mut args = vec!["--api-listen", listen.as_str()];
    args.extend(sets.iter().map(String::as_str));
    let mut agent = Agent::start(&args);

    // A real HTTPS client, with the CA and the token.
    let status = poll_until("GET /v1/status over HTTPS", Duration::from_secs(10), || {
        status_over_https(addr, &files.path("ca1.crt"))
    });
    assert!(status["agent"]["servers"]["api"].is_object(), "{status}");
    // The event stream over HTTPS: a process started now is read from it.
    let mut stream = Command::new("curl")
        .args(["-sSN", "--max-time", "30", "--cacert"])
        .arg(files.path("ca1.crt"))
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("https://{addr}/v1/events?type=exec"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = sonde_tests::agent::collect_text(
        stream.stdout.take().expect("stdout"),
        std::sync::Arc::clone(&lines),
    );
    poll_until(
        "an exec event read over HTTPS",
        Duration::from_secs(15),
        || {
            let _ = Command::new("/bin/true").status();
            let seen = lines.lock().expect("lock").clone();
            let found = seen.lines().any(|l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|e| e["type"] == "process_exec" && e["filename"] == "/bin/true")
            });
            if found { Ok(()) } else { Err(seen) }
        },
    );
    let _ = stream.kill();
    let _ = stream.wait();
    let _ = reader.join();

    // Plain HTTP to the HTTPS port is not served, and counted.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    poll_until(
        "the failed handshake counted in /v1/status",
        Duration::from_secs(10),
        || {
            let s = status_over_https(addr, &files.path("ca1.crt"))?;
            match s["agent"]["servers"]["api"]["tls_handshake_failures"].as_u64() {
                Some(n) if n >= 1 => Ok(()),
                _ => Err(s["agent"]["servers"].to_string()),
            }
        },
    );
    let (code, metrics) = sonde_tests::api::get(agent.metrics_addr(), "/metrics");
    assert_eq!(code, 200, "/metrics stays plain HTTP");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("sonde_http_tls_handshake_failures_total{server=\"api\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );

    // sonde status: HTTPS from the run configuration (its chain file holds the CA).
    let config = files.path("sonde.yaml");
    std::fs::write(
        &config,
        format!(
            "api:\n  listen: {listen}\n  token_file: {}\n  tls_cert_file: {}\n  tls_key_file: {}\n",
            files.path("token").display(),
            files.path("tls.crt").display(),
            files.path("tls.key").display()
        ),
    )
    .expect("config");
    let doc = client_json(
        Command::new(sonde_bin())
            .args(["status", "--output", "json", "--config"])
            .arg(&config),
    );
    assert!(doc["agent"].is_object());
    // … and a CA that did not sign the certificate names the fix.
    let stranger = TestCa::new("not-the-api-ca");
    stranger.write_pem(&files.path("stranger.crt"));
    let refused = |extra: &[&str], ca: &str| {
        let out = Command::new(sonde_bin())
            .args(["status", "--api", &listen])
            .args(extra)
            .arg("--token-file")
            .arg(files.path("token"))
            .arg("--ca-file")
            .arg(files.path(ca))
            .output()
            .expect("sonde status");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{stderr}");
        stderr
    };
    let stderr = refused(&[], "stranger.crt");
    assert!(
        stderr.contains("TLS") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    // … and one for a name the certificate does not carry, the SAN fix.
    let stderr = refused(&["--tls-server-name", "other.example"], "ca1.crt");
    assert!(stderr.contains("SANs"), "{stderr}");

    // Renewal: both files replaced by a certificate of another CA; new handshakes get it.
    let second = TestCa::new("sonde-api-ca-2");
    second.write_pem(&files.path("ca2.crt"));
    second
        .issue_server_cert(&["127.0.0.1"])
        .write_pem(&files.path("tls.crt"), &files.path("tls.key"));
    poll_until(
        "the renewed certificate served",
        Duration::from_secs(10),
        || status_over_https(addr, &files.path("ca2.crt")),
    );
    let old = status_over_https(addr, &files.path("ca1.crt"));
    assert!(old.is_err(), "the old CA still verifies: {old:?}");
    agent.wait_log_line("API TLS certificate reloaded", Duration::from_secs(5));
    agent.stop().assert_nothing_lost();
}

#[test]
fn unusable_tls_files_stop_the_agent_naming_them() {
    let files = Files::new();
    let ca = TestCa::new("sonde-api-ca");
    ca.issue_server_cert(&["127.0.0.1"])
        .write_pem(&files.path("tls.crt"), &files.path("tls.key"));
    let listen = free_loopback_addr().to_string();
    let run = |sets: &[String]| {
        let out = Command::new(sonde_bin())
            .args(["run", "--api-listen", &listen, "--metrics-listen", "off"])
            .args(sets)
            .output()
            .expect("run sonde");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A certificate without its key.
    let cert_only = vec![
        "--set".to_string(),
        format!("api.tls_cert_file={}", files.path("tls.crt").display()),
    ];
    let (code, stderr) = run(&cert_only);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("api.tls_key_file"), "{stderr}");
    // A key of another pair.
    ca.issue_server_cert(&["127.0.0.1"])
        .write_pem(&files.path("other.crt"), &files.path("other.key"));
    let mut sets = files.sets();
    sets.push("--set".into());
    sets.push(format!(
        "api.tls_key_file={}",
        files.path("other.key").display()
    ));
    let (code, stderr) = run(&sets);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("does not fit") && stderr.contains("other.key"),
        "{stderr}"
    );
    // A key file with no key in it.
    std::fs::write(files.path("tls.key"), "not a key\n").expect("write");
    let (code, stderr) = run(&files.sets());
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("api.tls_key_file") && stderr.contains("tls.key"),
        "{stderr}"
    );
}
