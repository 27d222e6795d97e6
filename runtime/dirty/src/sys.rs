//! The raw kernel interface: `userfaultfd(2)`, its `UFFDIO_API` and
//! `UFFDIO_REGISTER` ioctls, and the `PAGEMAP_SCAN` ioctl on
//! `/proc/self/pagemap`.
//!
//! `libc` 0.2 has `SYS_userfaultfd` and the `_IOWR` macro but none of these
//! structures or numbers, so they are written out here from the kernel's
//! uapi headers:
//!
//! - `include/uapi/linux/userfaultfd.h`: `struct uffdio_api`,
//!   `struct uffdio_register`, `UFFDIO_API` (`_IOWR(0xAA, 0x3F, ..)`),
//!   `UFFDIO_REGISTER` (`_IOWR(0xAA, 0x00, ..)`), `UFFD_USER_MODE_ONLY` (1),
//!   `UFFD_FEATURE_WP_UNPOPULATED` (1 << 13, Linux 6.4),
//!   `UFFD_FEATURE_WP_ASYNC` (1 << 15, Linux 6.7; an early version of the
//!   patch used 1 << 14, which `UFFD_FEATURE_POISON` took in the merged
//!   kernel);
//! - `include/uapi/linux/fs.h` (Linux 6.7): `struct pm_scan_arg` (12 `__u64`,
//!   96 bytes, with `walk_end` after `end`), `struct page_region`,
//!   `PAGEMAP_SCAN` (`_IOWR('f', 16, struct pm_scan_arg)`), `PAGE_IS_WRITTEN`
//!   (1 << 1), `PM_SCAN_WP_MATCHING` (1 << 0), `PM_SCAN_CHECK_WPASYNC`
//!   (1 << 1).
//!
//! The numbers were cross-checked against a C program compiled with the
//! system's uapi headers (userfaultfd) and against wasmtime 48's own
//! `PAGEMAP_SCAN` binding (`src/runtime/vm/sys/unix/pagemap.rs`); the const
//! assertions below pin them for the common 64-bit architectures.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `UFFD_API`: the only userfaultfd API version.
pub const UFFD_API: u64 = 0xAA;
/// `userfaultfd(2)` flag: handle faults from user mode only. Enough here
/// (async write-protect faults are resolved inside the kernel whoever
/// faults), and lets an unprivileged process use userfaultfd when
/// `vm.unprivileged_userfaultfd` is 0.
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// Write-protect unpopulated (never touched) pages too, with PTE markers.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Resolve write-protect faults in the kernel: no message, no blocking.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER` mode: track write-protect faults.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

/// `PAGE_IS_WRITTEN`: the page was written since it was write-protected.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Write-protect the pages that match (after reporting them).
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail with `EPERM` on a VMA not registered for async write-protect.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// `struct page_region`: one run of pages with the same categories.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

const UFFDIO: u32 = 0xAA;
/// `UFFDIO_API`.
pub const UFFDIO_API: libc::Ioctl = libc::_IOWR::<UffdioApi>(UFFDIO, 0x3F);
/// `UFFDIO_REGISTER`.
pub const UFFDIO_REGISTER: libc::Ioctl = libc::_IOWR::<UffdioRegister>(UFFDIO, 0x00);
/// `PAGEMAP_SCAN`.
pub const PAGEMAP_SCAN: libc::Ioctl = libc::_IOWR::<PmScanArg>(b'f' as u32, 16);

const _: () = assert!(size_of::<UffdioApi>() == 24);
const _: () = assert!(size_of::<UffdioRegister>() == 32);
const _: () = assert!(size_of::<PmScanArg>() == 96);
const _: () = assert!(size_of::<PageRegion>() == 24);
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const _: () = {
    // `as u32`: `Ioctl` is `c_ulong` on glibc, `c_int` on musl.
    assert!(UFFDIO_API as u32 == 0xC018_AA3F);
    assert!(UFFDIO_REGISTER as u32 == 0xC020_AA00);
    assert!(PAGEMAP_SCAN as u32 == 0xC060_6610);
};

/// The OS page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `userfaultfd(2)`.
pub fn userfaultfd(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: the syscall takes one integer argument and touches no memory
    // of ours.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(uffd, UFFDIO_API, arg)`.
pub fn uffdio_api(uffd: &OwnedFd, arg: &mut UffdioApi) -> io::Result<()> {
    // SAFETY: UFFDIO_API reads and writes exactly one `struct uffdio_api`,
    // which `arg` is (repr(C), size checked above) and exclusively borrows.
    let ret = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, arg as *mut UffdioApi) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(uffd, UFFDIO_REGISTER, arg)`.
///
/// The registered range is only ever looked up in this process's page
/// tables by the kernel; nothing is read or written through it.
pub fn uffdio_register(uffd: &OwnedFd, arg: &mut UffdioRegister) -> io::Result<()> {
    // SAFETY: UFFDIO_REGISTER reads and writes exactly one
    // `struct uffdio_register`, which `arg` is and exclusively borrows. The
    // address range inside is not dereferenced by the kernel either: it
    // selects VMAs.
    let ret = unsafe {
        libc::ioctl(
            uffd.as_raw_fd(),
            UFFDIO_REGISTER,
            arg as *mut UffdioRegister,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(pagemap, PAGEMAP_SCAN, arg)` with `arg.vec`/`arg.vec_len` set
/// to `out` (empty: no output, e.g. a pure write-protect). Returns how
/// many entries of `out` the kernel filled.
pub fn pagemap_scan(
    pagemap: &File,
    arg: &mut PmScanArg,
    out: &mut [PageRegion],
) -> io::Result<usize> {
    arg.size = size_of::<PmScanArg>() as u64;
    if out.is_empty() {
        arg.vec = 0;
        arg.vec_len = 0;
    } else {
        arg.vec = out.as_mut_ptr() as u64;
        arg.vec_len = out.len() as u64;
    }
    // SAFETY: PAGEMAP_SCAN reads and writes one `struct pm_scan_arg` (`arg`,
    // exclusively borrowed) and writes at most `vec_len` `struct
    // page_region`s at `vec`, which is `out` (exclusively borrowed, `vec_len`
    // its length). `[start, end)` is only walked in the page tables, never
    // dereferenced.
    let ret = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, arg as *mut PmScanArg) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    if n > out.len() {
        return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    Ok(n)
}

/// Fails with `ENOMEM` unless all of `[start, start + len)` is mapped.
/// `msync(MS_ASYNC)` has no other effect since Linux 2.6.19: it walks the
/// VMAs of the range and starts no writeback.
pub fn check_mapped(start: usize, len: usize) -> io::Result<()> {
    // SAFETY: msync takes the range as an address (page-aligned, checked by
    // the caller) and does not access its contents; with MS_ASYNC it only
    // checks that every page of it is mapped.
    let ret = unsafe { libc::msync(start as *mut libc::c_void, len, libc::MS_ASYNC) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The symbolic name of the errnos these calls return, for messages.
pub fn errno_name(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EINTR) => "EINTR",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EOVERFLOW) => "EOVERFLOW",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(_) => "errno",
        None => "error",
    }
}
