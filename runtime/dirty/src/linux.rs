//! The tracker on Linux: userfaultfd async write-protect + `PAGEMAP_SCAN`.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;

use crate::TrackError;
use crate::sys::{self, PageRegion, PmScanArg, UffdioApi, UffdioRange, UffdioRegister};

pub(crate) use crate::sys::page_size;

/// Entries of `struct page_region` per `PAGEMAP_SCAN` call (12 KiB). A
/// region is a run of adjacent written pages, so this is rarely the limit;
/// when it is, the scan continues from `walk_end`.
const SCAN_BATCH: usize = 512;

const FEATURES: u64 = sys::UFFD_FEATURE_WP_ASYNC | sys::UFFD_FEATURE_WP_UNPOPULATED;

#[derive(Debug)]
pub(crate) struct Tracker {
    /// The userfaultfd context the region is registered with. Closing it
    /// (on drop) makes the kernel unregister every range registered with it
    /// and clear their write-protect bits.
    uffd: OwnedFd,
    /// `/proc/self/pagemap`, for `PAGEMAP_SCAN`.
    pagemap: File,
    /// Address of the region: only ever passed to the kernel as a number.
    start: usize,
    /// Bytes tracked from `start`.
    len: usize,
    page: usize,
    /// Ranges (relative to `start`) the next `take` reports whatever the
    /// scan says: all of it after `new` or a failed `take`, the new tail
    /// after `grow`.
    forced: Vec<Range<usize>>,
    buf: Vec<PageRegion>,
}

impl Tracker {
    pub(crate) fn new(start: usize, len: usize) -> Result<Tracker, TrackError> {
        let page = sys::page_size();
        check_aligned(start, len, page)?;

        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | sys::UFFD_USER_MODE_ONLY;
        let uffd = sys::userfaultfd(flags).map_err(|e| {
            unsupported(
                "userfaultfd(2)",
                &e,
                match e.raw_os_error() {
                    Some(libc::ENOSYS) => "the kernel is built without CONFIG_USERFAULTFD",
                    Some(libc::EPERM) => {
                        "not permitted (seccomp filter, or vm.unprivileged_userfaultfd=0 on a kernel older than 5.11)"
                    }
                    Some(libc::EINVAL) => "UFFD_USER_MODE_ONLY needs Linux >= 5.11",
                    _ => "",
                },
            )
        })?;

        // Asking for features the kernel lacks fails with EINVAL, so success
        // means async mode is on: a write to a write-protected page never
        // blocks waiting for a reader of `uffd` (there is none).
        let mut api = UffdioApi {
            api: sys::UFFD_API,
            features: FEATURES,
            ioctls: 0,
        };
        sys::uffdio_api(&uffd, &mut api).map_err(|e| {
            unsupported(
                "ioctl(UFFDIO_API, UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED)",
                &e,
                "UFFD_FEATURE_WP_ASYNC needs Linux >= 6.7",
            )
        })?;
        if api.features & FEATURES != FEATURES {
            return Err(TrackError::Unsupported(format!(
                "ioctl(UFFDIO_API) enabled features {:#x}, without UFFD_FEATURE_WP_ASYNC|UFFD_FEATURE_WP_UNPOPULATED ({FEATURES:#x})",
                api.features
            )));
        }

        let pagemap = File::open("/proc/self/pagemap")
            .map_err(|e| unsupported("open(/proc/self/pagemap)", &e, "is /proc mounted?"))?;

        let mut tracker = Tracker {
            uffd,
            pagemap,
            start,
            len: 0,
            page,
            forced: Vec::new(),
            buf: vec![PageRegion::default(); SCAN_BATCH],
        };
        tracker.extend(len).map_err(|e| match e {
            TrackError::Os { .. } => TrackError::Unsupported(e.to_string()),
            other => other,
        })?;
        Ok(tracker)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn grow(&mut self, start: usize, len: usize) -> Result<(), TrackError> {
        if start != self.start {
            return Err(TrackError::InvalidRegion(format!(
                "the region moved from {:#x} to {start:#x} (wasmtime relocates a memory that outgrows its reservation); start a new tracker",
                self.start
            )));
        }
        if len < self.len {
            return Err(TrackError::InvalidRegion(format!(
                "the region shrank from {:#x} to {len:#x} bytes",
                self.len
            )));
        }
        check_aligned(start, len, self.page)?;
        self.extend(len)
    }

    /// Registers and write-protects `[self.len, len)` and makes the next
    /// `take` report it.
    fn extend(&mut self, len: usize) -> Result<(), TrackError> {
        if len == self.len {
            return Ok(());
        }
        let from = self.start + self.len;
        let to = self.start + len;
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: from as u64,
                len: (to - from) as u64,
            },
            mode: sys::UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        sys::uffdio_register(&self.uffd, &mut reg).map_err(|e| {
            unsupported(
                "ioctl(UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_WP)",
                &e,
                match e.raw_os_error() {
                    Some(libc::EBUSY) => {
                        "the range is already registered with another userfaultfd (another tracker?)"
                    }
                    Some(libc::EPERM) => "the mapping can never be writable (no VM_MAYWRITE)",
                    Some(libc::EINVAL) => "the range is not entirely mapped, or of a kind userfaultfd cannot register",
                    _ => "",
                },
            )
        })?;

        // Registration alone tracks nothing: a page is "written" until it is
        // write-protected. Protect every page of the new range, unpopulated
        // ones included (PTE markers, thanks to WP_UNPOPULATED).
        let mut cursor = from;
        while cursor < to {
            let mut arg = PmScanArg {
                flags: sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC,
                start: cursor as u64,
                end: to as u64,
                ..PmScanArg::default()
            };
            sys::pagemap_scan(&self.pagemap, &mut arg, &mut []).map_err(|e| {
                os(
                    "ioctl(PAGEMAP_SCAN, PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC) arming",
                    e,
                )
            })?;
            cursor = progress(cursor, arg.walk_end, to)?;
        }

        // Whatever was written before the protection above (including, for
        // `grow`, writes the guest made to the new pages before the caller
        // got here) is covered by reporting the whole new range.
        self.forced.push(self.len..len);
        self.len = len;
        Ok(())
    }

    pub(crate) fn take(
        &mut self,
        start: usize,
        len: usize,
        out: &mut Vec<Range<usize>>,
    ) -> Result<(), TrackError> {
        if start != self.start || len != self.len {
            return Err(TrackError::InvalidRegion(format!(
                "take was given {start:#x}+{len:#x} but the tracker tracks {:#x}+{:#x}{}",
                self.start,
                self.len,
                if start == self.start && len > self.len {
                    " (call grow after memory.grow)"
                } else {
                    ""
                }
            )));
        }
        let first = out.len();
        if self.len == 0 {
            return Ok(());
        }
        // A scan skips unmapped holes silently: check first that the whole
        // region is still mapped (VMAs only, microseconds).
        let scanned = sys::check_mapped(self.start, self.len)
            .map_err(|e| os("msync(MS_ASYNC) mapped-check", e))
            .and_then(|()| self.scan(out, first));
        if let Err(e) = scanned {
            // Part of the region may have been re-protected before the
            // failure, its written state lost: report everything next time.
            out.truncate(first);
            self.forced.clear();
            self.forced.push(0..self.len);
            return Err(e);
        }
        if !self.forced.is_empty() {
            out.append(&mut self.forced);
            coalesce(out, first);
        }
        Ok(())
    }

    /// One pass of `PAGEMAP_SCAN` over the region: appends the written
    /// pages to `out` (merged with what this take appended since `first`)
    /// and write-protects them again, atomically per page table.
    fn scan(&mut self, out: &mut Vec<Range<usize>>, first: usize) -> Result<(), TrackError> {
        let end = self.start + self.len;
        let mut cursor = self.start;
        while cursor < end {
            let mut arg = PmScanArg {
                flags: sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC,
                start: cursor as u64,
                end: end as u64,
                category_mask: sys::PAGE_IS_WRITTEN,
                return_mask: sys::PAGE_IS_WRITTEN,
                ..PmScanArg::default()
            };
            let n = sys::pagemap_scan(&self.pagemap, &mut arg, &mut self.buf).map_err(|e| {
                os(
                    "ioctl(PAGEMAP_SCAN, PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC)",
                    e,
                )
            })?;
            for region in &self.buf[..n] {
                let (s, e) = (region.start as usize, region.end as usize);
                if !(cursor <= s && s < e && e <= end) {
                    return Err(TrackError::Kernel(format!(
                        "PAGEMAP_SCAN returned {s:#x}..{e:#x}, outside the scanned {cursor:#x}..{end:#x}"
                    )));
                }
                let range = (s - self.start)..(e - self.start);
                let mergeable = out.len() > first;
                match out.last_mut() {
                    Some(last) if mergeable && last.end == range.start => last.end = range.end,
                    _ => out.push(range),
                }
            }
            cursor = progress(cursor, arg.walk_end, end)?;
        }
        Ok(())
    }
}

/// The next scan start after a `PAGEMAP_SCAN` that started at `cursor` and
/// reported `walk_end`, or an error if the kernel made no progress.
fn progress(cursor: usize, walk_end: u64, end: usize) -> Result<usize, TrackError> {
    let walk_end = walk_end as usize;
    if walk_end <= cursor || walk_end > end {
        return Err(TrackError::Kernel(format!(
            "PAGEMAP_SCAN from {cursor:#x} to {end:#x} stopped at {walk_end:#x}"
        )));
    }
    Ok(walk_end)
}

fn check_aligned(start: usize, len: usize, page: usize) -> Result<(), TrackError> {
    if !start.is_multiple_of(page) || !len.is_multiple_of(page) {
        return Err(TrackError::InvalidRegion(format!(
            "{start:#x}+{len:#x} is not aligned to the {page}-byte OS page"
        )));
    }
    if start.checked_add(len).is_none() {
        return Err(TrackError::InvalidRegion(format!(
            "{start:#x}+{len:#x} wraps around the address space"
        )));
    }
    Ok(())
}

/// Sorts `v[from..]` and merges its overlapping or adjacent ranges.
fn coalesce(v: &mut Vec<Range<usize>>, from: usize) {
    v[from..].sort_unstable_by_key(|r| r.start);
    let mut w = from;
    for i in from..v.len() {
        let r = v[i].clone();
        if w > from && v[w - 1].end >= r.start {
            v[w - 1].end = v[w - 1].end.max(r.end);
        } else {
            v[w] = r;
            w += 1;
        }
    }
    v.truncate(w);
}

fn unsupported(call: &str, err: &io::Error, hint: &str) -> TrackError {
    let sep = if hint.is_empty() { "" } else { "; " };
    TrackError::Unsupported(format!(
        "{call} failed with {}: {err}{sep}{hint}",
        sys::errno_name(err)
    ))
}

fn os(call: &'static str, err: io::Error) -> TrackError {
    let hint = match err.raw_os_error() {
        Some(libc::ENOMEM) => {
            "; part of the region is no longer mapped: drop the tracker and treat the whole region as written"
        }
        Some(libc::EPERM) => {
            "; part of the region is no longer registered for async write-protect (unmapped, or mapped over with mmap MAP_FIXED): drop the tracker and treat the whole region as written"
        }
        _ => "",
    };
    TrackError::Os {
        call,
        errno: sys::errno_name(&err),
        err,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_sorts_and_merges_after_from() {
        let mut v = vec![0..1, 10..12, 3..4, 4..6, 11..15, 20..21];
        coalesce(&mut v, 1);
        assert_eq!(v, vec![0..1, 3..6, 10..15, 20..21]);
        let mut v = vec![5..6, 1..2];
        coalesce(&mut v, 2);
        assert_eq!(v, vec![5..6, 1..2], "nothing after `from`");
    }
}
