//! How long a checkpoint barrier pauses to learn which pages changed.
//!
//! For memories of 16, 64 and 256 MiB (anonymous, fully populated, as a
//! memory in use is) and 0%, 1%, 10% and 100% of their 64 KiB pages
//! written (every 4 KiB page of each, pages spread pseudo-randomly), prints:
//!
//! - `take`: the pause, median of several rounds (`PAGEMAP_SCAN` reporting
//!   and re-protecting the written pages);
//! - `write`: the writes of one round, tracked;
//! - `write+`: what tracking adds to the writer per round (one minor fault on
//!   the first write to each 4 KiB page), against the same writes untracked;
//! - `new`: starting to track (write-protecting every page), once;
//! - `read all`: reading the whole memory once, the floor for any approach
//!   that hashes or compares every page;
//! - `ranges`: how many merged ranges the last `take` returned.
//!
//! Run with `cargo run --release -p weir-dirty --example pause`.

// mmap and raw writes to the benchmark's own mapping.
#![allow(unsafe_code)]

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use weir_dirty::DirtyTracker;

const OS_PAGE: usize = 4096;
const STORAGE_PAGE: usize = 64 * 1024;
const ROUNDS: usize = 9;

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Result<Mapping, Box<dyn Error>> {
        // SAFETY: a fresh private anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn region(&self) -> *const [u8] {
        std::ptr::slice_from_raw_parts(self.ptr, self.len)
    }

    /// Writes one byte to every 4 KiB page of the given 64 KiB pages.
    fn write_pages(&self, storage_pages: &[usize], value: u8) {
        for &sp in storage_pages {
            for off in (0..STORAGE_PAGE).step_by(OS_PAGE) {
                // SAFETY: inside the mapping.
                unsafe { std::ptr::write_volatile(self.ptr.add(sp * STORAGE_PAGE + off), value) };
            }
        }
    }

    fn read_all(&self) -> u64 {
        // SAFETY: the mapping is `len` readable bytes, 8-aligned, and no one
        // writes to it meanwhile.
        let words = unsafe { std::slice::from_raw_parts(self.ptr.cast::<u64>(), self.len / 8) };
        words.iter().fold(0u64, |a, &w| a.wrapping_add(w))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our mapping; nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `k` distinct indexes below `n`, spread pseudo-randomly (fixed seed).
fn choose(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in 0..k.min(n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x as usize) % (n - i);
        all.swap(i, j);
    }
    all.truncate(k);
    all.sort_unstable();
    all
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "{:>8} {:>6} {:>7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8}",
        "memory", "pages", "written", "take", "write", "write+", "new", "read all", "ranges"
    );
    for mib in [16usize, 64, 256] {
        let len = mib << 20;
        let n = len / STORAGE_PAGE;
        for pct in [0usize, 1, 10, 100] {
            let k = (n * pct).div_ceil(100);
            let m = Mapping::new(len)?;
            let all: Vec<usize> = (0..n).collect();
            m.write_pages(&all, 1); // populated, as a memory in use is

            let t0 = Instant::now();
            black_box(m.read_all());
            let read_all = t0.elapsed();

            // Untracked writes, for the baseline.
            let mut plain = Vec::new();
            for round in 0..ROUNDS {
                let pages = choose(n, k, 0x9E37_79B9 + round as u64);
                let t0 = Instant::now();
                m.write_pages(&pages, round as u8);
                plain.push(t0.elapsed());
            }

            let t0 = Instant::now();
            let mut tracker = DirtyTracker::new(m.region())?;
            let new = t0.elapsed();
            let mut out = Vec::new();
            tracker.take(m.region(), &mut out)?;

            let (mut takes, mut writes) = (Vec::new(), Vec::new());
            let mut ranges = 0;
            for round in 0..ROUNDS {
                let pages = choose(n, k, 0x9E37_79B9 + round as u64);
                let t0 = Instant::now();
                m.write_pages(&pages, round as u8);
                writes.push(t0.elapsed());

                out.clear();
                let t0 = Instant::now();
                tracker.take(m.region(), &mut out)?;
                takes.push(t0.elapsed());

                let bytes: usize = out.iter().map(|r| r.len()).sum();
                if bytes != k * STORAGE_PAGE {
                    return Err(
                        format!("reported {bytes} bytes, wrote {}", k * STORAGE_PAGE).into(),
                    );
                }
                ranges = out.len();
            }
            let (write, plain) = (median(writes), median(plain));
            println!(
                "{:>4} MiB {:>6} {:>6}% {} {} {} {} {} {:>8}",
                mib,
                n,
                pct,
                ms(median(takes)),
                ms(write),
                ms(write.saturating_sub(plain)),
                ms(new),
                ms(read_all),
                ranges
            );
        }
    }
    Ok(())
}
