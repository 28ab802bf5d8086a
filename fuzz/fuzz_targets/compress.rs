#![no_main]
//! See `rwproxy_fuzz::compress` for what this target covers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rwproxy_fuzz::compress(data));
