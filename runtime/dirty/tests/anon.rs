//! The tracker on plain anonymous mappings made with libc.

// The tests map, write and unmap memory through libc; the crate under test
// is itself the workspace's one unsafe exception.
#![allow(unsafe_code)]
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Mapping, PAGE, pages};
use weir_dirty::{DirtyTracker, TrackError, granules, os_page_size};

fn take(t: &mut DirtyTracker, m: &Mapping) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    t.take(m.region(), &mut out).expect("take");
    out
}

#[test]
fn os_page_is_4k() {
    assert_eq!(os_page_size(), PAGE, "these tests assume 4 KiB pages");
}

#[test]
fn reports_exactly_the_written_pages() {
    let m = Mapping::new(64 * PAGE, 64 * PAGE);
    // Populated before tracking starts: must not matter.
    m.write(0, 1);
    m.write(5 * PAGE, 1);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    assert_eq!(t.len(), 64 * PAGE);

    assert_eq!(
        take(&mut t, &m),
        vec![0..64 * PAGE],
        "first take is everything"
    );
    assert_eq!(take(&mut t, &m), vec![], "nothing written since");

    // Populated and never-touched pages, a run of three, the last page,
    // several writes to one page.
    for &p in &[0, 5, 9, 10, 11, 63] {
        m.write(p * PAGE + 17, 2);
    }
    m.write(10 * PAGE + 4095, 3);
    assert_eq!(take(&mut t, &m), pages(&[0, 5, 9, 10, 11, 63]));
    assert_eq!(take(&mut t, &m), vec![]);

    // Writing the same value that is already there is still a write.
    m.write(5 * PAGE + 17, 2);
    assert_eq!(take(&mut t, &m), pages(&[5]));
}

#[test]
fn take_appends_and_keeps_earlier_contents() {
    let m = Mapping::new(8 * PAGE, 8 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    let sentinel = 100..200;
    let mut out = vec![sentinel.clone()];
    t.take(m.region(), &mut out).expect("take");
    assert_eq!(out, vec![sentinel.clone(), 0..8 * PAGE]);
    m.write(3 * PAGE, 1);
    t.take(m.region(), &mut out).expect("take");
    assert_eq!(out, vec![sentinel, 0..8 * PAGE, 3 * PAGE..4 * PAGE]);
}

#[test]
fn never_touched_and_read_only_pages_are_not_reported() {
    let m = Mapping::new(256 * PAGE, 256 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    assert_eq!(take(&mut t, &m), vec![0..256 * PAGE]);
    // Reading never-touched pages maps the zero page: not a write.
    let mut sum = 0u32;
    for p in 0..256 {
        sum += u32::from(m.read(p * PAGE));
    }
    assert_eq!(sum, 0);
    assert_eq!(take(&mut t, &m), vec![]);
    // A first write after a read (zero page -> real page) is a write.
    m.write(200 * PAGE, 1);
    assert_eq!(take(&mut t, &m), pages(&[200]));
    assert_eq!(take(&mut t, &m), vec![]);
}

#[test]
fn many_scattered_pages_exceed_one_scan_batch() {
    // Every other page of 4096: 2048 separate regions, more than one
    // PAGEMAP_SCAN output batch, so the scan must continue from walk_end.
    let n = 4096;
    let m = Mapping::new(n * PAGE, n * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    let written: Vec<usize> = (0..n).step_by(2).collect();
    for &p in &written {
        m.write(p * PAGE, 1);
    }
    assert_eq!(take(&mut t, &m), pages(&written));
    assert_eq!(take(&mut t, &m), vec![]);
}

#[test]
fn grow_tracks_new_pages() {
    // A reservation of 64 pages, 16 accessible, like a wasm memory.
    let mut m = Mapping::new(16 * PAGE, 64 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);

    m.grow_to(32 * PAGE);
    // The guest writes to old and new pages before the host sees the growth.
    m.write(3 * PAGE, 1);
    m.write(20 * PAGE, 1);
    let mut out = Vec::new();
    match t.take(m.region(), &mut out) {
        Err(TrackError::InvalidRegion(msg)) => assert!(msg.contains("grow"), "{msg}"),
        other => panic!("take on a grown region without grow: {other:?}"),
    }
    t.grow(m.region()).expect("grow");
    assert_eq!(t.len(), 32 * PAGE);
    // The old page, and all of the new range.
    assert_eq!(
        take(&mut t, &m),
        vec![3 * PAGE..4 * PAGE, 16 * PAGE..32 * PAGE]
    );
    assert_eq!(take(&mut t, &m), vec![]);
    m.write(31 * PAGE, 1);
    m.write(16 * PAGE, 1);
    assert_eq!(take(&mut t, &m), pages(&[16, 31]));

    // Growing by nothing is a no-op; a grow that is adjacent to a written
    // last page merges.
    t.grow(m.region()).expect("grow by 0");
    assert_eq!(take(&mut t, &m), vec![]);
    m.write(31 * PAGE, 1);
    m.grow_to(40 * PAGE);
    t.grow(m.region()).expect("grow");
    assert_eq!(take(&mut t, &m), vec![31 * PAGE..40 * PAGE]);
}

#[test]
fn a_prot_none_reservation_can_be_tracked_whole() {
    // Not how weir uses the tracker (a wasm reservation is 4 GiB: arming
    // all of it would build page tables for all of it), but it answers
    // whether userfaultfd registers PROT_NONE memory: it does, and pages
    // made accessible later are tracked without `grow`.
    let mut m = Mapping::new(16 * PAGE, 64 * PAGE);
    let whole = std::ptr::slice_from_raw_parts(m.ptr().cast_const(), 64 * PAGE);
    let mut t = DirtyTracker::new(whole).expect("new over a PROT_NONE tail");
    let mut out = Vec::new();
    t.take(whole, &mut out).expect("take");
    assert_eq!(out, vec![0..64 * PAGE]);
    m.grow_to(32 * PAGE);
    m.write(20 * PAGE, 1);
    m.write(2 * PAGE, 1);
    out.clear();
    t.take(whole, &mut out).expect("take");
    assert_eq!(out, pages(&[2, 20]));
}

#[test]
fn grow_rejects_moved_or_shrunk_regions() {
    let m = Mapping::new(16 * PAGE, 16 * PAGE);
    let other = Mapping::new(16 * PAGE, 16 * PAGE);
    let mut t = DirtyTracker::new(m.sub(0..8 * PAGE)).expect("new");
    assert!(matches!(
        t.grow(other.region()),
        Err(TrackError::InvalidRegion(_))
    ));
    assert!(matches!(
        t.grow(m.sub(0..4 * PAGE)),
        Err(TrackError::InvalidRegion(_))
    ));
    let mut out = Vec::new();
    assert!(matches!(
        t.take(other.region(), &mut out),
        Err(TrackError::InvalidRegion(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn misaligned_regions_are_rejected() {
    let m = Mapping::new(4 * PAGE, 4 * PAGE);
    assert!(matches!(
        DirtyTracker::new(m.sub(1..PAGE + 1)),
        Err(TrackError::InvalidRegion(_))
    ));
    assert!(matches!(
        DirtyTracker::new(m.sub(0..PAGE + 1)),
        Err(TrackError::InvalidRegion(_))
    ));
}

#[test]
fn empty_region_then_grow() {
    let mut m = Mapping::new(0, 16 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new on an empty region");
    assert!(t.is_empty());
    assert_eq!(take(&mut t, &m), vec![]);
    m.grow_to(4 * PAGE);
    t.grow(m.region()).expect("grow");
    assert_eq!(take(&mut t, &m), vec![0..4 * PAGE]);
    m.write(PAGE, 1);
    assert_eq!(take(&mut t, &m), pages(&[1]));
}

#[test]
fn writes_from_other_threads_are_tracked() {
    let m = Arc::new(Mapping::new(1024 * PAGE, 1024 * PAGE));
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for p in (i..1024).step_by(13 * 4) {
                    m.write(p * PAGE + i, 7);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("writer");
    }
    let mut expect: Vec<usize> = Vec::new();
    for i in 0..4 {
        expect.extend((i..1024).step_by(13 * 4));
    }
    assert_eq!(take(&mut t, &m), pages(&expect));
}

#[test]
fn copies_of_reported_pages_reconstruct_memory_despite_racing_writes() {
    // The checkpoint property: copying the pages each take reports, while
    // another thread keeps writing, and once more after it stopped, gives
    // exactly the memory. A write lost between a scan and its re-protection
    // would leave a stale copy.
    const N: usize = 2048;
    let m = Arc::new(Mapping::new(N * PAGE, N * PAGE));
    let mut t = DirtyTracker::new(m.region()).expect("new");
    let mut copy = vec![0u64; N];
    let mut apply = |t: &mut DirtyTracker, seen: &mut BTreeSet<usize>| {
        for r in take(t, &m) {
            for (p, c) in copy
                .iter_mut()
                .enumerate()
                .take(r.end / PAGE)
                .skip(r.start / PAGE)
            {
                *c = m.read_u64(p * PAGE);
                seen.insert(p);
            }
        }
    };
    let mut seen = BTreeSet::new();
    apply(&mut t, &mut seen);
    seen.clear();

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    // Odd pages only, each write a new value.
    let writer = {
        let (m, stop, rounds) = (Arc::clone(&m), Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || {
            let mut value = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in (1..N).step_by(2) {
                    value += 1;
                    m.write_u64(p * PAGE, value);
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut takes = 0;
    while takes < 300 || rounds.load(Ordering::Relaxed) < 100 {
        apply(&mut t, &mut seen);
        takes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    apply(&mut t, &mut seen);

    for (p, c) in copy.iter().enumerate() {
        assert_eq!(*c, m.read_u64(p * PAGE), "page {p} copy is stale");
    }
    let odd: BTreeSet<usize> = (1..N).step_by(2).collect();
    assert_eq!(seen, odd, "every written page, and no even page");
    assert_eq!(take(&mut t, &m), vec![]);
}

#[test]
fn kernel_writes_are_tracked() {
    let m = Mapping::new(16 * PAGE, 16 * PAGE);
    m.write(3 * PAGE, 1); // populated before tracking
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    let mut fds = [0; 2];
    // SAFETY: fds is two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    for _ in 0..2 {
        // SAFETY: writes 8 bytes from a static string.
        let n = unsafe { libc::write(fds[1], b"abcdefgh".as_ptr().cast(), 8) };
        assert_eq!(n, 8);
    }
    // read(2) by the kernel into a populated, protected page and into a
    // never-touched one.
    for p in [3, 12] {
        // SAFETY: 8 bytes inside the mapping.
        let n = unsafe { libc::read(fds[0], m.ptr().add(p * PAGE + 100).cast(), 8) };
        assert_eq!(n, 8);
    }
    // SAFETY: our descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(m.read(12 * PAGE + 100), b'a');
    assert_eq!(take(&mut t, &m), pages(&[3, 12]));
}

#[test]
fn madvise_dontneed_counts_as_a_write() {
    let m = Mapping::new(1024 * PAGE, 1024 * PAGE);
    for p in 0..1024 {
        m.write(p * PAGE, 1);
    }
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    // One page, and a whole 2 MiB-aligned page table's worth (which the
    // kernel may free entirely).
    m.dontneed(7 * PAGE..8 * PAGE);
    let base = m.ptr() as usize;
    let aligned = (base + (2 << 20) - 1) & !((2 << 20) - 1);
    let first = (aligned - base) / PAGE;
    m.dontneed(first * PAGE..(first + 512) * PAGE);
    let mut expect = vec![7];
    expect.extend(first..first + 512);
    assert_eq!(take(&mut t, &m), pages(&expect));
    assert_eq!(m.read(7 * PAGE), 0);
}

#[test]
fn a_second_tracker_on_the_same_pages_is_refused_until_the_first_drops() {
    let m = Mapping::new(8 * PAGE, 8 * PAGE);
    let t = DirtyTracker::new(m.region()).expect("new");
    match DirtyTracker::new(m.region()) {
        Err(TrackError::Unsupported(msg)) => assert!(msg.contains("EBUSY"), "{msg}"),
        other => panic!("second tracker: {other:?}"),
    }
    drop(t);
    // Closing the first tracker's userfaultfd unregistered the range.
    let mut t = DirtyTracker::new(m.region()).expect("new after drop");
    take(&mut t, &m);
    m.write(2 * PAGE, 1);
    assert_eq!(take(&mut t, &m), pages(&[2]));
}

#[test]
fn disjoint_trackers_do_not_interfere() {
    let m = Mapping::new(16 * PAGE, 16 * PAGE);
    let (a, b) = (m.sub(0..8 * PAGE), m.sub(8 * PAGE..16 * PAGE));
    let mut ta = DirtyTracker::new(a).expect("a");
    let mut tb = DirtyTracker::new(b).expect("b");
    let mut out = Vec::new();
    ta.take(a, &mut out).expect("a");
    tb.take(b, &mut out).expect("b");
    m.write(PAGE, 1);
    m.write(9 * PAGE, 1);
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    ta.take(a, &mut oa).expect("a");
    tb.take(b, &mut ob).expect("b");
    assert_eq!(oa, pages(&[1]));
    assert_eq!(ob, pages(&[1]));
}

#[test]
fn mapping_replaced_under_the_tracker_is_an_error() {
    let m = Mapping::new(8 * PAGE, 8 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    m.write(PAGE, 1);
    m.remap_fixed();
    m.write(2 * PAGE, 1);
    let sentinel = 0..1;
    let mut out = vec![sentinel.clone()];
    match t.take(m.region(), &mut out) {
        Err(e @ TrackError::Os { errno: "EPERM", .. }) => {
            assert!(e.to_string().contains("PAGEMAP_SCAN"), "{e}");
        }
        other => panic!("take over a replaced mapping: {other:?}"),
    }
    assert_eq!(out, vec![sentinel], "nothing appended on error");
}

#[test]
fn tracker_outliving_its_memory_is_harmless() {
    let m = Mapping::new(8 * PAGE, 8 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    m.write(PAGE, 1);
    let region = m.region();
    drop(m);
    // Nothing is mapped there any more: take says so instead of reporting
    // nothing.
    let mut out = Vec::new();
    match t.take(region, &mut out) {
        Err(TrackError::Os {
            errno: "ENOMEM", ..
        }) => {}
        other => panic!("take over an unmapped region: {other:?}"),
    }
    assert!(out.is_empty());
    assert_eq!(t.len(), 8 * PAGE);
    drop(t);
}

/// Bit 57 of the page's `/proc/self/pagemap` entry: write-protected by
/// userfaultfd (pagemap.rst).
fn uffd_wp_bit(addr: usize) -> bool {
    use std::os::unix::fs::FileExt;
    let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, (addr / PAGE * 8) as u64)
        .expect("pagemap entry");
    u64::from_ne_bytes(entry) >> 57 & 1 == 1
}

#[test]
fn drop_clears_write_protection() {
    let m = Mapping::new(8 * PAGE, 8 * PAGE);
    m.write(PAGE, 1);
    let t = DirtyTracker::new(m.region()).expect("new");
    let (populated, untouched) = (m.ptr() as usize + PAGE, m.ptr() as usize + 5 * PAGE);
    assert!(uffd_wp_bit(populated) && uffd_wp_bit(untouched));
    drop(t);
    assert!(!uffd_wp_bit(populated) && !uffd_wp_bit(untouched));
}

#[test]
fn dropped_tracker_leaves_memory_fully_usable() {
    let m = Mapping::new(64 * PAGE, 64 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    m.write(PAGE, 1);
    drop(t);
    for p in 0..64 {
        m.write(p * PAGE, 9);
    }
    for p in 0..64 {
        assert_eq!(m.read(p * PAGE), 9);
    }
}

#[test]
fn transparent_huge_pages_are_reported_at_4k_after_the_first_take() {
    // 4 MiB aligned inside 8 MiB, asked to be THP-backed, populated.
    let m = Mapping::new(2048 * PAGE, 2048 * PAGE);
    let base = m.ptr() as usize;
    let aligned = (base + (2 << 20) - 1) & !((2 << 20) - 1);
    let off = aligned - base;
    // SAFETY: inside our mapping; MADV_HUGEPAGE is only a hint.
    unsafe { libc::madvise(aligned as *mut libc::c_void, 4 << 20, libc::MADV_HUGEPAGE) };
    for p in 0..1024 {
        m.write(off + p * PAGE, 1);
    }
    let region = m.sub(off..off + (4 << 20));
    let mut t = DirtyTracker::new(region).expect("new");
    let mut out = Vec::new();
    t.take(region, &mut out).expect("take");
    out.clear();
    m.write(off + 5 * PAGE, 2);
    t.take(region, &mut out).expect("take");
    assert_eq!(out, pages(&[5]));
}

#[test]
fn granules_map_os_pages_to_storage_pages() {
    let m = Mapping::new(64 * PAGE, 64 * PAGE);
    let mut t = DirtyTracker::new(m.region()).expect("new");
    take(&mut t, &m);
    for p in [0, 15, 16, 40] {
        m.write(p * PAGE, 1);
    }
    let out = take(&mut t, &m);
    let storage: Vec<usize> = granules(&out, 64 * 1024).collect();
    assert_eq!(storage, vec![0, 1, 2]);
}
