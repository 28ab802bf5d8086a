//! The SQL scanners as they were before `router::lex` (copied verbatim,
//! tests removed), kept only to run old and new side by side in
//! `router::lex_equivalence` before the old code is deleted.
#![allow(dead_code, clippy::all)]

pub mod classify;
pub mod digest;
pub mod session;
pub mod set;
