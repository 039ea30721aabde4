//! Reading Sonde's /metrics the way Prometheus does: a plain HTTP GET, a parser of the text
//! exposition format, `promtool check metrics`, and a real `prometheus` server scraping the
//! agent and answering PromQL over its HTTP API.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::poll::{Shown, poll_until};

/// `GET path` over HTTP/1.0; returns (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// The agent's exposition (asserting 200 and the Prometheus text content type).
pub fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "content type: {head}"
    );
    body
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: family types and samples.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: &str) -> Self {
        let mut out = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE line");
                out.types.insert(name.into(), ty.into());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// Samples of `name` whose labels include every `(key, value)` of `want`.
    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample of `name` matching `want` (panics if there is not exactly one).
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert_eq!(
            found.len(),
            1,
            "expected one {name} sample with {want:?}, found {found:#?}"
        );
        found[0].value
    }

    /// Like [`Self::value`], 0 when there is no such sample.
    pub fn value_or_zero(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        found.iter().map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("sample line without value: {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let Some((name, labels)) = series.split_once('{') else {
        return Sample {
            name: series.into(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let mut map = BTreeMap::new();
    let mut rest = labels
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"");
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, c)) => val.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => val.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        map.insert(key.trim_start_matches(',').to_string(), val);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Sample {
        name: name.into(),
        labels: map,
        value,
    }
}

/// Runs `promtool check metrics` on `exposition`; returns its combined output on failure.
pub fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): `cargo xtask setup` installs the prometheus package")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A free loopback port (bound and released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A real Prometheus server in a temporary directory, scraping `targets` every second.
pub struct PrometheusServer {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    pub fn start(targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: sonde\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): `cargo xtask setup` installs the prometheus \
                     package"
                )
            });
        let mut server = PrometheusServer {
            child,
            addr,
            _dir: dir,
        };
        poll_until("prometheus to be ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", server.log());
            }
            if TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready").0 == 200 {
                Ok(())
            } else {
                Err(Shown(server.log()))
            }
        });
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant PromQL query: `(labels, value)` per result.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let (status, _, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        assert_eq!(status, 200, "query {promql}: {body}");
        let json: Value = serde_json::from_str(&body).expect("query JSON");
        assert_eq!(json["status"], "success", "query {promql}: {json}");
        json["data"]["result"]
            .as_array()
            .expect("result array")
            .iter()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("sample value");
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// The scrape targets' health as Prometheus sees it.
    pub fn targets(&self) -> Value {
        let (_, _, body) = http_get(self.addr, "/api/v1/targets");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The labels every workload series carries (written `*workload*` in docs/metrics.md).
pub const WORKLOAD_LABELS: [&str; 8] = [
    "container_id",
    "runtime",
    "pod_uid",
    "namespace",
    "pod",
    "container",
    "workload",
    "systemd_unit",
];

/// `docs/metrics.md`'s family table: `(name, type, labels)` for every documented family.
pub fn documented_families(doc: &Path) -> Vec<(String, String, Vec<String>)> {
    let text =
        std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("reading {}: {e}", doc.display()));
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `name` | type | labels | meaning |
            if cells.len() < 5 {
                return None;
            }
            let name = cells[1].strip_prefix('`')?.strip_suffix('`')?;
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let ty = cells[2].to_string();
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .filter(|l| !l.is_empty() && l != "—" && l != "-")
                .flat_map(|l| {
                    if l == "*workload*" {
                        WORKLOAD_LABELS.iter().map(|w| w.to_string()).collect()
                    } else {
                        vec![l]
                    }
                })
                .collect();
            Some((name.to_string(), ty, labels))
        })
        .collect()
}
