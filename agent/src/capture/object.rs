//! The eBPF object, built by `build.rs` and embedded in the binary: one self-contained file.

/// ELF bytes of `sonde-ebpf`, 8-byte aligned as the loader needs.
pub static BYTES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-ebpf"));
