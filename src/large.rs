//! Large allocations: each its own mapping, with a small header just before
//! the block so `free(p)` finds the mapping from the pointer alone.
//!
//! ```text
//! mapping: | ... header | block ................ | tail of the last page |
//!          ^ base       ^ base + offset (aligned)
//! ```
//!
//! `offset` is 64 bytes for alignments up to 64, the alignment itself up to
//! the page size, and one page above it (the mapping is then placed so that
//! `base + page` is aligned). Growing a block with alignment up to a page
//! uses `mremap`, which moves pages, not bytes.

use crate::os;
use crate::stats::OS_COUNTERS;
use core::ptr;

#[repr(C)]
struct LargeHeader {
    /// Start of the mapping.
    base: usize,
    /// Bytes mapped.
    map_size: usize,
    /// `LARGE_MAGIC ^ base`: a cheap check that a pointer is one of ours.
    magic: usize,
}

const HEADER_SIZE: usize = core::mem::size_of::<LargeHeader>();
const MIN_OFFSET: usize = 64;
const LARGE_MAGIC: usize = 0x706f_6f6c_6c61_7267;

const _: () = assert!(HEADER_SIZE <= MIN_OFFSET);

fn block_offset(align: usize, page: usize) -> usize {
    if align <= MIN_OFFSET {
        MIN_OFFSET
    } else if align <= page {
        align
    } else {
        page
    }
}

/// Bytes to map for `size` bytes at `offset`, or `None` on overflow.
fn map_size_for(size: usize, offset: usize, page: usize) -> Option<usize> {
    size.checked_add(offset)?.checked_next_multiple_of(page)
}

/// # Safety
/// `block` is a live large block.
unsafe fn header(block: *mut u8) -> *mut LargeHeader {
    // SAFETY: the header sits just before every large block, in its mapping.
    let h = unsafe { block.sub(HEADER_SIZE).cast::<LargeHeader>() };
    // SAFETY: as above, the header is initialised.
    let (base, magic) = unsafe { ((*h).base, (*h).magic) };
    if magic != LARGE_MAGIC ^ base {
        os::fatal("free or realloc of a pointer that is not a live poolmalloc block");
    }
    h
}

/// Maps a block of `size` bytes aligned to `align` (a power of two); null if
/// the request cannot be met. The memory is zeroed (fresh from the OS).
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let page = os::page_size();
    let offset = block_offset(align, page);
    let Some(map_size) = map_size_for(size, offset, page) else {
        return ptr::null_mut();
    };
    if map_size > isize::MAX as usize {
        return ptr::null_mut();
    }
    let base = if align <= page { os::map(map_size) } else { os::map_aligned(map_size, align, offset) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `offset < map_size`, inside the fresh mapping.
    let block = unsafe { base.add(offset) };
    // SAFETY: the header lies in `[base, block)`, which the mapping covers.
    unsafe { write_header(block, base as usize, map_size) };
    OS_COUNTERS.large_mapped(map_size);
    block
}

/// # Safety
/// `[base, base + map_size)` is this block's mapping and `block - HEADER_SIZE
/// >= base`.
unsafe fn write_header(block: *mut u8, base: usize, map_size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        block.sub(HEADER_SIZE).cast::<LargeHeader>().write(LargeHeader { base, map_size, magic: LARGE_MAGIC ^ base });
    }
}

/// Unmaps a large block.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and not freed since.
pub unsafe fn free(block: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let h = header(block);
        let (base, map_size) = ((*h).base, (*h).map_size);
        (*h).magic = 0;
        os::unmap(base as *mut u8, map_size);
        OS_COUNTERS.large_unmapped(map_size);
    }
}

/// The bytes usable from `block` to the end of its mapping.
///
/// # Safety
/// `block` is a live large block.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe {
        let h = header(block);
        (*h).base + (*h).map_size - block as usize
    }
}

/// Resizes a large block to `new_size` (still large) keeping its contents:
/// shrinks in place, grows in place when the mapping already has room, and
/// otherwise moves the pages with `mremap` (alignment up to a page) or
/// allocates and copies. Null on failure, with the old block untouched.
///
/// # Safety
/// `block` is a live large block allocated with `align`, holding `old_size`
/// bytes the caller cares about.
pub unsafe fn realloc(block: *mut u8, old_size: usize, new_size: usize, align: usize) -> *mut u8 {
    let page = os::page_size();
    // SAFETY: forwarded from the caller.
    let h = unsafe { header(block) };
    // SAFETY: the header is live.
    let (base, map_size) = unsafe { ((*h).base, (*h).map_size) };
    let offset = block as usize - base;
    let Some(new_map_size) = map_size_for(new_size, offset, page) else {
        return ptr::null_mut();
    };
    if new_map_size == map_size {
        return block;
    }
    if new_map_size < map_size {
        // SAFETY: the tail past the new size is ours and page-aligned.
        unsafe { os::unmap((base + new_map_size) as *mut u8, map_size - new_map_size) };
        // SAFETY: the header is live.
        unsafe { (*h).map_size = new_map_size };
        OS_COUNTERS.large_remapped(map_size, new_map_size);
        return block;
    }
    if align <= page && new_map_size <= isize::MAX as usize {
        // SAFETY: the whole mapping is this block's.
        let new_base = unsafe { os::remap(base as *mut u8, map_size, new_map_size) };
        if !new_base.is_null() {
            // SAFETY: the mapping moved intact; `offset` is within it and the
            // page-aligned base keeps `base + offset` aligned to `align`.
            unsafe {
                let moved = new_base.add(offset);
                write_header(moved, new_base as usize, new_map_size);
                OS_COUNTERS.large_remapped(map_size, new_map_size);
                return moved;
            }
        }
    }
    let moved = alloc(new_size, align);
    if !moved.is_null() {
        // SAFETY: both blocks are live and distinct; `old_size < new_size`.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, old_size.min(new_size));
            free(block);
        }
    }
    moved
}
