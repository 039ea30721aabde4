//! Remote lookup cost: `RemoteIndex::lookup` (ClusterIP:port → Service, endpoint IP → pod,
//! miss → External) with 10,000 Services and 50,000 endpoints. Prints the median ns per
//! lookup over batches, per case. Target: ≤ 200 ns.

use std::{hint::black_box, net::IpAddr, time::Instant};

use sonde::kube::{
    ObjectName, Remote, RemoteIndex,
    services::{EndpointEntry, ServiceEntry, SliceEntry},
};

const SERVICES: u32 = 10_000;
const ENDPOINTS_PER_SERVICE: u32 = 5;
const BATCH: u32 = 10_000;
const BATCHES: usize = 50;

fn v4(net: u8, i: u32) -> IpAddr {
    let [_, a, b, c] = i.to_be_bytes();
    IpAddr::from([net, a, b, c])
}

fn median_ns(mut probe: impl FnMut(u32) -> std::sync::Arc<Remote>) -> f64 {
    let mut samples = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let started = Instant::now();
        for i in 0..BATCH {
            black_box(probe(i));
        }
        samples.push(started.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    samples.sort_by(f64::total_cmp);
    samples[BATCHES / 2]
}

fn main() {
    let index = RemoteIndex::new();
    for s in 0..SERVICES {
        let name = format!("svc-{s}");
        index.upsert_service(
            ObjectName::new("ns", &name),
            ServiceEntry {
                cluster_ips: vec![v4(10, s)],
                ports: vec![80, 443],
            },
        );
        let endpoints = (0..ENDPOINTS_PER_SERVICE)
            .map(|e| EndpointEntry {
                ip: v4(11, s * ENDPOINTS_PER_SERVICE + e),
                pod: Some(ObjectName::new("ns", &format!("{name}-pod-{e}"))),
            })
            .collect();
        index.upsert_slice(
            ObjectName::new("ns", &format!("{name}-slice")),
            SliceEntry {
                service: Some(name.as_str().into()),
                endpoints,
            },
        );
    }
    let service = median_ns(|i| index.lookup(v4(10, (i * 7) % SERVICES), 443));
    let pod =
        median_ns(|i| index.lookup(v4(11, (i * 13) % (SERVICES * ENDPOINTS_PER_SERVICE)), 8080));
    let external = median_ns(|i| index.lookup(v4(93, i), 443));
    println!(
        "remote lookup, median ns per lookup ({SERVICES} services, {} endpoints):",
        SERVICES * ENDPOINTS_PER_SERVICE
    );
    println!("  service (ClusterIP:port)  {service:8.1}");
    println!("  pod (endpoint address)    {pod:8.1}");
    println!("  external (miss)           {external:8.1}");
}
