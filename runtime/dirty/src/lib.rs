//! Which pages of a memory region were written since the last look.
//!
//! At a checkpoint barrier weir stores only the 64 KiB pages of an
//! operator's linear memory that changed since the previous barrier. Hashing
//! all of a 256 MiB memory to find them costs tens of milliseconds; asking
//! the kernel costs 0.2 ms when 1% of it changed (3 ms when all of it did;
//! `examples/pause.rs`). [`DirtyTracker`] asks the kernel, the way CRIU does
//! for incremental dumps:
//!
//! 1. a userfaultfd in *asynchronous write-protect* mode
//!    (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7, plus `UFFD_FEATURE_WP_UNPOPULATED`
//!    so never-touched pages are protected too) is registered over the
//!    region, and every page of it is write-protected;
//! 2. the first write to a protected page takes a minor fault that the
//!    kernel resolves by itself: it drops the protection and carries on. No
//!    message, no signal, no blocking; the page is now "written";
//! 3. [`DirtyTracker::take`] runs the `PAGEMAP_SCAN` ioctl on
//!    `/proc/self/pagemap` with `PAGE_IS_WRITTEN` and
//!    `PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC`: it reports the written
//!    pages and write-protects them again in the same page-table walk.
//!
//! See the kernel's `Documentation/admin-guide/mm/userfaultfd.rst`
//! ("Write Protect Notifications", async mode) and
//! `Documentation/admin-guide/mm/pagemap.rst` (`PAGEMAP_SCAN`), and the
//! man page `PAGEMAP_SCAN(2const)`.
//!
//! # What counts as a write
//!
//! Tracking is in the page tables of this process, so it sees every write
//! that goes through them:
//!
//! - stores by any thread of the process (the guest's, the host's through
//!   `Memory::data_mut`), including threads other than the caller's;
//! - writes by the kernel on the process's behalf: `read(2)` into the
//!   region, `recv(2)`, `process_vm_writev(2)` from another process
//!   (checked by the tests for `read(2)`);
//! - `madvise(MADV_DONTNEED)` on part of the region (the pages read as zero
//!   afterwards, so they are reported as written).
//!
//! It does **not** see writes that bypass this process's page tables after
//! the page was last protected: DMA into pages pinned before a `take`
//! (`O_DIRECT` reads in flight, io_uring fixed buffers, RDMA) and writes
//! through *another mapping* of the same memory (a `MAP_SHARED` alias, a
//! memfd mapped twice). Wasmtime does none of these with linear memory.
//!
//! Granularity is the OS page (4 KiB on x86_64). Transparent huge pages do
//! not coarsen it: the first write to a protected huge page splits it, and
//! only the 4 KiB page written is reported (tested with `MADV_HUGEPAGE`).
//!
//! # Cost to the writer
//!
//! The first write to each page after a `take` takes a minor fault (about
//! 1.3 µs here). Later writes to the same page are free until the next
//! `take`. A guest that rewrites all of a 256 MiB memory between two
//! barriers thus runs about 85 ms longer; one that writes 1% of it, 0.8 ms.
//!
//! # Soundness
//!
//! All entry points are safe functions, and they take the region as a raw
//! slice pointer (`*const [u8]`; a `&[u8]` such as `Memory::data(&store)`
//! coerces to it) because the tracker never reads, writes or references the
//! memory: it keeps the address and length as numbers. The kernel only uses
//! them to select page-table entries and flip their write-protect bit,
//! which in async mode changes nothing a program can observe except timing:
//! every write still succeeds. `new` enables async mode before registering
//! anything, and the kernel fails the registration otherwise, so no thread
//! can ever block on a write-protect fault waiting for a handler; the scan
//! only re-protects memory registered for async mode
//! (`PM_SCAN_CHECK_WPASYNC`). So `new` need not be an `unsafe fn`: the
//! worst a misused tracker can do (the region unmapped, something else
//! mapped at its address, a wrong region passed) is report wrong pages or
//! fail. See [`DirtyTracker`] for the caller's side of the contract.
//!
//! # Integration with wasmtime (48, x86_64 Linux, default `Config`)
//!
//! A 32-bit linear memory is an anonymous private mapping of its whole
//! reservation (4 GiB, plus 32 MiB guard regions), `PROT_NONE`, of which
//! the first `memory.size` bytes are made read-write with `mprotect`;
//! `memory.grow` `mprotect`s more of it, so the base never moves (a memory
//! that outgrows its reservation is copied to a new mapping:
//! [`DirtyTracker::grow`] reports that as [`TrackError::InvalidRegion`]).
//! userfaultfd can register the `PROT_NONE` tail too (a test does), but the
//! tracker covers only the accessible part and [`DirtyTracker::grow`] adds
//! the rest as it becomes accessible: arming all 4 GiB would build page
//! tables for all of it. With copy-on-write memory
//! initialisation (on by default) the pages holding data segments are a
//! private mapping of a sealed memfd laid over the start of the memory at
//! instantiation; async write-protect covers that mapping too. Wasmtime
//! does not `madvise` or remap a memory while its instance lives (the
//! pooling allocator resets slots only when an instance is deallocated).
//!
//! Track the slice `Memory::data(&store)` (or the guest-memory slice of the
//! `list<u8>` of a `put-memory` host call, which is the whole memory from
//! address 0; not a copy of it). Start tracking with the guest stopped, at
//! a point whose contents are captured too: right after a restore (the
//! restored checkpoint is the base), or at a barrier (the first `take`
//! reports every page). Writes between capturing the contents and `new`
//! would be missed.
//!
//! ```no_run
//! # fn demo(store: &mut wasmtime::Store<()>, memory: wasmtime::Memory) -> Result<(), Box<dyn std::error::Error>> {
//! use weir_dirty::{DirtyTracker, granules};
//! let mut tracker = DirtyTracker::new(memory.data(&*store))?; // guest stopped
//! // ... the guest runs ...
//! let mut written = Vec::new();
//! let data = memory.data(&*store);
//! if data.len() > tracker.len() {
//!     tracker.grow(data)?;
//! }
//! tracker.take(data, &mut written)?; // in the pause: reads page tables only
//! for page in granules(&written, 64 * 1024) {
//!     let bytes = &data[page * 65536..(page + 1) * 65536];
//!     // hash and store `bytes`, before the guest runs again
//! #   let _ = bytes;
//! }
//! # Ok(()) }
//! ```
//!
//! Any error means the dirty information is incomplete: store the whole
//! memory (hashing it) for this barrier and start a new tracker.
//! [`TrackError::Unsupported`] from `new` names the system call and errno
//! that refused: for `userfaultfd(2)` or `UFFDIO_API` it means this kernel
//! or process cannot track at all, so fall back to hashing for good.

// The workspace denies unsafe code. This crate is the one exception: it
// talks to the kernel through `syscall(2)` and `ioctl(2)` with raw
// pointers to `#[repr(C)]` structures. The unsafe blocks are all in
// `sys.rs`, each a single call with a `SAFETY:` comment; none of them
// dereferences the tracked region.
#![allow(unsafe_code)]

use std::ops::Range;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
use linux as imp;
#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
use unsupported as imp;

/// Why tracking failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// This kernel, process or region cannot be tracked (kernel older than
    /// 6.7, userfaultfd forbidden, region registered by another
    /// userfaultfd, not a writable mapping ...). The message names the
    /// system call and the errno. Fall back to hashing.
    #[error("dirty-page tracking unavailable: {0}")]
    Unsupported(String),
    /// The region given is not usable with this tracker: misaligned, not
    /// the tracked region, moved or shrunk.
    #[error("invalid region: {0}")]
    InvalidRegion(String),
    /// A system call failed while tracking. The region's written pages
    /// are unknown for this call; the next successful `take` reports the
    /// whole region.
    #[error("{call} failed with {errno}: {err}{hint}")]
    Os {
        /// The system call.
        call: &'static str,
        /// The symbolic errno, e.g. `EPERM`.
        errno: &'static str,
        /// The error as the OS reported it.
        err: std::io::Error,
        /// What the errno means here, or empty.
        hint: &'static str,
    },
    /// The kernel answered something impossible (a region outside the
    /// range asked for, no progress). Treat like [`TrackError::Os`].
    #[error("unexpected kernel answer: {0}")]
    Kernel(String),
}

/// Tracks writes to one region of this process's memory, e.g. a wasm linear
/// memory that wasmtime mapped.
///
/// # The caller's contract
///
/// None of these is needed for memory safety (see the crate docs); they are
/// needed for the answers to be right:
///
/// - The region is page-aligned (OS pages; [`os_page_size`]) in start and
///   length, and is a *private* mapping that may be written (`MAP_PRIVATE`
///   anonymous memory, or a private file mapping such as wasmtime's
///   copy-on-write image). Shared mappings are accepted by the kernel, but
///   writes through other mappings of the same memory are not seen.
/// - The region stays mapped at the same address for as long as the tracker
///   lives. `mprotect` is fine (wasmtime's `memory.grow`); `munmap`, `mremap`
///   or `mmap(MAP_FIXED)` over it ends tracking of the affected pages, and
///   `take` then fails: `ENOMEM` from its `msync(MS_ASYNC)` check while part
///   of the region is unmapped, `EPERM` from `PAGEMAP_SCAN` once something
///   untracked is mapped there. (A region unmapped and re-registered by
///   *another* tracker at the same address is not detected: the two would
///   steal each other's written pages.) If the memory is dropped (wasmtime
///   drops the instance), drop the tracker too; until then it holds only a
///   file descriptor and a userfaultfd context with nothing registered.
/// - No other userfaultfd may register the same pages (`new` fails with
///   `EBUSY`). Two trackers over disjoint regions are fine.
/// - Contents read *after* `take` returns include every write it reported;
///   a write racing with `take` on another thread is reported either by
///   this `take` or by the next one. For a consistent checkpoint stop the
///   writers (the guest is paused at a barrier) and copy or hash the
///   reported pages before they run again.
///
/// # Dropping
///
/// Dropping the tracker closes its userfaultfd. The kernel then unregisters
/// every range registered with it and clears their write-protect bits, so
/// the memory behaves as if it had never been tracked. (The tracker does
/// not `UFFDIO_UNREGISTER` its range explicitly: by then the range might be
/// someone else's, while closing the descriptor only affects memory
/// registered with this one.) If the process `fork`s without `exec`, the
/// child holds the descriptor too and the registration stays until the
/// child closes it; writes still succeed in the meantime.
#[derive(Debug)]
pub struct DirtyTracker {
    inner: imp::Tracker,
}

impl DirtyTracker {
    /// Starts tracking `[region.cast::<u8>(), +region.len())`, which must
    /// be page-aligned. Every page counts as written for the first
    /// [`take`](Self::take). `region` is never dereferenced (pass a `&[u8]`;
    /// it coerces).
    ///
    /// Costs a page-table walk over the region that write-protects every
    /// page (and allocates page tables for never-touched parts, 4 KiB per
    /// 2 MiB): 0.6 ms for 64 MiB, 2.2 ms for 256 MiB here. Do it outside
    /// the barrier pause.
    ///
    /// # Errors
    ///
    /// [`TrackError::Unsupported`] when the kernel, the process's
    /// permissions or the region do not allow tracking (the caller falls
    /// back to hashing); [`TrackError::InvalidRegion`] when the region is
    /// not page-aligned.
    pub fn new(region: *const [u8]) -> Result<DirtyTracker, TrackError> {
        let (start, len) = addr_len(region);
        Ok(DirtyTracker {
            inner: imp::Tracker::new(start, len)?,
        })
    }

    /// The region grew (same start, e.g. after wasm `memory.grow`): starts
    /// tracking the new pages, which count as written for the next
    /// [`take`](Self::take) (writes the guest made to them before this call
    /// are thus covered). A region of the same length is a no-op.
    ///
    /// # Errors
    ///
    /// [`TrackError::InvalidRegion`] if the region moved, shrank or is
    /// misaligned (a moved memory needs a new tracker);
    /// [`TrackError::Unsupported`] if the new pages cannot be registered;
    /// [`TrackError::Os`] otherwise. After an error the tracker still
    /// tracks the old length; drop it and hash the whole memory.
    pub fn grow(&mut self, region: *const [u8]) -> Result<(), TrackError> {
        let (start, len) = addr_len(region);
        self.inner.grow(start, len)
    }

    /// Appends to `out` the byte ranges, relative to the region's start, of
    /// the pages written since the previous call (or since [`new`](Self::new)),
    /// and write-protects them again. The ranges are OS-page granular,
    /// sorted and merged (no two touch); `out`'s earlier contents are left
    /// alone. Use [`granules`] to turn them into storage-page indexes.
    ///
    /// `region` must be the tracked region: same start and length (call
    /// [`grow`](Self::grow) first after the memory grew).
    ///
    /// # Errors
    ///
    /// [`TrackError::InvalidRegion`] if `region` is not the tracked region
    /// (nothing is scanned); [`TrackError::Os`] if part of the region is
    /// no longer mapped (`msync`, `ENOMEM`) or no longer registered
    /// (`PAGEMAP_SCAN`, `EPERM`), or the scan failed otherwise;
    /// [`TrackError::Kernel`] on an impossible answer. After a failed scan
    /// nothing is appended, and the next successful `take` reports the
    /// whole region, since part of it may have been re-protected before the
    /// failure.
    pub fn take(
        &mut self,
        region: *const [u8],
        out: &mut Vec<Range<usize>>,
    ) -> Result<(), TrackError> {
        let (start, len) = addr_len(region);
        self.inner.take(start, len, out)
    }

    /// How many bytes are tracked (the region's length at `new` or the last
    /// successful `grow`).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the tracked region is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The OS page size: the granularity of [`DirtyTracker::take`]'s ranges and
/// the alignment it requires.
pub fn os_page_size() -> usize {
    imp::page_size()
}

/// The indexes of the `granule`-byte blocks (e.g. 64 KiB storage pages)
/// that `ranges` touch, ascending and each once. `ranges` must be sorted
/// and non-overlapping, as [`DirtyTracker::take`] appends them; a `granule`
/// of 0 yields nothing.
pub fn granules(ranges: &[Range<usize>], granule: usize) -> impl Iterator<Item = usize> + '_ {
    let mut last: Option<usize> = None;
    ranges
        .iter()
        .filter(move |r| granule != 0 && r.start < r.end)
        .flat_map(move |r| (r.start / granule)..=((r.end - 1) / granule))
        .filter(move |&g| {
            let fresh = last.is_none_or(|l| g > l);
            if fresh {
                last = Some(g);
            }
            fresh
        })
}

fn addr_len(region: *const [u8]) -> (usize, usize) {
    // Only the address is kept: the tracker never dereferences the region.
    (region.cast::<u8>() as usize, region.len())
}

#[cfg(test)]
mod tests {
    use super::granules;

    #[test]
    fn granules_dedups_across_ranges() {
        let k = 4096;
        let ranges = [
            0..k,
            3 * k..5 * k,
            15 * k..17 * k,
            17 * k..18 * k,
            40 * k..41 * k,
        ];
        let got: Vec<usize> = granules(&ranges, 16 * k).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(granules(&ranges, 0).count(), 0);
        let got: Vec<usize> = granules(&ranges, k).collect();
        assert_eq!(got, vec![0, 3, 4, 15, 16, 17, 40]);
    }
}
