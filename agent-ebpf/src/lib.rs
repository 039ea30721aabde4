//! Host-side stub: the programs live in the `sonde-ebpf` binary target, built for `bpfel` by
//! the agent's build script. This library exists so the agent can depend on the package and be
//! rebuilt when it changes.
#![no_std]
