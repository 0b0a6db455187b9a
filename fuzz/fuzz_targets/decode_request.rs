//! Any bytes as a request frame: decoding returns a request or an error, never panics or aborts.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The broker's allocator (a module of the `once` binary, included by path), so forged array counts
// behave as they do in `once serve`.
#[path = "../../crates/cli/src/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::LazyHugeAllocator = alloc::LazyHugeAllocator;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let prefix = [data[0], data[1], data[2], data[3]];
        let _ = once_wire::frame::request_frame_length(prefix, once_wire::frame::FRAME_BYTES_MAX_DEFAULT);
    }
    let _ = once_wire::decode_request(bytes::Bytes::copy_from_slice(data));
});
