//! The `once` binary's allocator: the system allocator, except that very large allocations are
//! reserved lazily. (A module of the binary, not of the codec crate: the global allocator is the
//! binary's choice. The decode fuzz target includes this file by path, to decode as `once serve` does.)
//!
//! Why: the Kafka codecs pre-allocate arrays from element counts read off the wire
//! (`Vec::with_capacity(count)`), before they find out that the frame is far too short to hold that
//! many elements (kafka-protocol-rs issue/PRs 152, 161, 200, still open). A 20-byte request announcing
//! 2^31 elements would ask for hundreds of GiB; the system allocator refuses, and Rust aborts the
//! whole process on a refused allocation — one malformed request would take down every client's broker.
//! Reserving such allocations with `MAP_NORESERVE` makes them address space only: the decode then fails
//! cleanly at the end of the frame, having touched a page or two, and the mapping is returned.
//! Allocations that are really used beyond RAM meet the kernel's OOM handling, exactly as before.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this size go to lazily backed anonymous mappings.
const LAZY_BYTES_MIN: usize = 1 << 30;
/// Anonymous mappings are page aligned; larger alignments stay with the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct LazyHugeAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either from `System` (and returned to it with the same layout)
// or from an anonymous private mapping of exactly `layout.size()` bytes, page aligned (so aligned for
// any `align <= PAGE_BYTES`), zero filled, and unmapped with the same size. `is_lazy` depends only on
// the layout, which callers must pass back unchanged, so each pointer returns to the allocator it came from.
unsafe impl GlobalAlloc for LazyHugeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            map(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new_ptr
    }
}

unsafe fn map(size: usize) -> *mut u8 {
    let pointer = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if pointer == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        pointer.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_lazy_and_usable() {
        let allocator = LazyHugeAllocator;
        let layout = Layout::from_size_align(1 << 40, 8).expect("layout");
        // SAFETY: the layout has non-zero size; the pointer is used within it and freed with it.
        unsafe {
            let pointer = allocator.alloc(layout);
            assert!(!pointer.is_null(), "1 TiB of address space is reserved without backing");
            pointer.write(7);
            assert_eq!(pointer.read(), 7);
            allocator.dealloc(pointer, layout);
        }
    }
}
