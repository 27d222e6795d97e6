//! An anonymous mapping for the tests, made and written with libc.

#![allow(dead_code)]

use std::ops::Range;

/// A private anonymous mapping of `reserved` bytes, of which the first
/// `accessible` are read-write and the rest `PROT_NONE` (like a wasmtime
/// linear memory reservation).
pub struct Mapping {
    ptr: *mut u8,
    reserved: usize,
    accessible: usize,
}

// SAFETY: the mapping is plain memory; the tests write to disjoint pages
// from several threads through raw pointers only.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

pub const PAGE: usize = 4096;

impl Mapping {
    pub fn new(accessible: usize, reserved: usize) -> Mapping {
        assert!(accessible <= reserved);
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserved,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        let m = Mapping {
            ptr: ptr.cast(),
            reserved,
            accessible: 0,
        };
        let mut m = m;
        m.grow_to(accessible);
        m
    }

    /// Makes the first `accessible` bytes read-write (wasmtime's
    /// `memory.grow`).
    pub fn grow_to(&mut self, accessible: usize) {
        assert!(accessible <= self.reserved && accessible >= self.accessible);
        if accessible > 0 {
            // SAFETY: inside our own mapping.
            let r = unsafe {
                libc::mprotect(
                    self.ptr.cast(),
                    accessible,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            assert_eq!(r, 0, "mprotect");
        }
        self.accessible = accessible;
    }

    /// The accessible part, as the tracker takes it (never dereferenced,
    /// so other threads may write to it meanwhile).
    pub fn region(&self) -> *const [u8] {
        std::ptr::slice_from_raw_parts(self.ptr, self.accessible)
    }

    /// `range` of the accessible part.
    pub fn sub(&self, range: Range<usize>) -> *const [u8] {
        assert!(range.start <= range.end && range.end <= self.accessible);
        std::ptr::slice_from_raw_parts(self.ptr.wrapping_add(range.start), range.len())
    }

    pub fn write(&self, offset: usize, value: u8) {
        assert!(offset < self.accessible);
        // SAFETY: inside the accessible part.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset), value) }
    }

    pub fn read(&self, offset: usize) -> u8 {
        assert!(offset < self.accessible);
        // SAFETY: inside the accessible part.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset)) }
    }

    pub fn write_u64(&self, offset: usize, value: u64) {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.accessible);
        // SAFETY: aligned, inside the accessible part.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset).cast::<u64>(), value) }
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.accessible);
        // SAFETY: aligned, inside the accessible part.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<u64>()) }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn accessible(&self) -> usize {
        self.accessible
    }

    /// `madvise(MADV_DONTNEED)` on `range`.
    pub fn dontneed(&self, range: Range<usize>) {
        // SAFETY: inside our own mapping; the pages read as zero afterwards.
        let r = unsafe {
            libc::madvise(
                self.ptr.add(range.start).cast(),
                range.len(),
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(r, 0, "madvise");
    }

    /// Replaces the accessible part with a fresh anonymous mapping at the
    /// same address (what wasmtime does to reset or re-image a slot).
    pub fn remap_fixed(&self) {
        // SAFETY: replaces our own mapping in place.
        let p = unsafe {
            libc::mmap(
                self.ptr.cast(),
                self.accessible,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        assert_eq!(p.cast::<u8>(), self.ptr, "mmap MAP_FIXED");
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no references into it outlive `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.reserved) };
    }
}

/// Page-granular byte ranges of the given OS page numbers, merged.
pub fn pages(list: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut list = list.to_vec();
    list.sort_unstable();
    list.dedup();
    for p in list {
        match out.last_mut() {
            Some(last) if last.end == p * PAGE => last.end += PAGE,
            _ => out.push(p * PAGE..(p + 1) * PAGE),
        }
    }
    out
}
