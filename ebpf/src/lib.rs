//! The fluxgate XDP program lives in `main.rs` (built for bpfel-unknown-none by
//! `fluxgate-dataplane`'s build script). This empty library target only lets the
//! dataplane declare a build-dependency on this crate, so cargo rebuilds the
//! object whenever the program changes.
#![no_std]
