//! The canonical ABI of `handler.process`, by hand.
//!
//! wit-bindgen's generated glue takes ownership of every input list the host
//! allocated (one `malloc` per record value, freed after the record) and
//! hands the host freshly allocated buffers for every output (two per
//! output, freed in `post-return`). At a million records a second that
//! allocator traffic costs more than many operators' own work. Here:
//!
//! * **Inputs** are lowered by the host through `cabi_realloc`. Between two
//!   calls (when no guest code runs, so the only caller is the host
//!   lowering the next call's arguments) `cabi_realloc` bumps a pointer in
//!   an arena; the records of a batch are read in place (a [`Record`]
//!   borrows its key and value) and the arena is rewound when `process`
//!   returns. While guest code runs, and before `init` has succeeded (whose
//!   arguments wit-bindgen's glue owns and frees), `cabi_realloc` is the
//!   global allocator.
//! * **Outputs** are the [`Emitter`]'s slots, reused from batch to batch;
//!   the result records point into them and into [`Lowered`]'s buffers,
//!   which stay valid until the next call, so no `post-return` is needed.
//!
//! Layouts (wasm32, from the canonical ABI): `record` is 48 bytes, align 8
//! (`key` option at 0 with payload at 4, `value` at 12, `timestamp-ms`
//! option at 24 with payload at 32, `headers` at 40); `header` is 16 bytes
//! (`name` at 0, `value` at 8); `output` is 36 bytes (`sink` at 0, `key`
//! option at 8 with payload at 12, `value` at 20, `headers` at 28);
//! `rejection` is 12 bytes (`index` at 0, `reason` at 4); `batch-result` is
//! 16 bytes (`outputs` at 0, `rejections` at 8). A list is a `(ptr, len)`
//! pair of `u32`s.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use super::__private::{Exported, Slot};
use super::{Header, Lowered, Operator, Record};

/// Where the host's lowering of `process` arguments goes.
struct Arena {
    /// `init` succeeded.
    ready: Cell<bool>,
    /// True between calls once `init` succeeded: `cabi_realloc` bumps.
    active: Cell<bool>,
    base: Cell<usize>,
    cap: Cell<usize>,
    used: Cell<usize>,
    /// Bytes asked for since the last rewind, alignment slack included:
    /// the chunk is regrown to this, so the next batch of the same shape
    /// fits.
    demand: Cell<usize>,
    /// Allocations that did not fit, freed at the rewind.
    overflow: RefCell<Vec<(usize, Layout)>>,
}

/// Alignment of the arena's chunk (the largest the canonical ABI asks for).
const CHUNK_ALIGN: usize = 8;

thread_local! {
    static ARENA: Arena = const {
        Arena {
            ready: Cell::new(false),
            active: Cell::new(false),
            base: Cell::new(0),
            cap: Cell::new(0),
            used: Cell::new(0),
            demand: Cell::new(0),
            overflow: RefCell::new(Vec::new()),
        }
    };
}

impl Arena {
    fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        self.demand.set(self.demand.get() + size + align - 1);
        let base = self.base.get();
        let start = (base + self.used.get() + align - 1) & !(align - 1);
        if base != 0 && start + size <= base + self.cap.get() {
            self.used.set(start + size - base);
            return start as *mut u8;
        }
        let layout = layout(size, align);
        // SAFETY: `size` is not zero (the caller handles that).
        let p = unsafe { alloc::alloc(layout) };
        if p.is_null() {
            alloc::handle_alloc_error(layout);
        }
        self.overflow.borrow_mut().push((p as usize, layout));
        p
    }

    /// Forgets every allocation (their records are gone) and grows the
    /// chunk to what the last batch needed.
    fn rewind(&self) {
        for (p, layout) in self.overflow.borrow_mut().drain(..) {
            // SAFETY: allocated in `alloc` with this layout, freed once.
            unsafe { alloc::dealloc(p as *mut u8, layout) };
        }
        let demand = self.demand.replace(0);
        self.used.set(0);
        if demand > self.cap.get() {
            let base = self.base.get();
            if base != 0 {
                // SAFETY: the chunk was allocated below with this layout.
                unsafe { alloc::dealloc(base as *mut u8, layout(self.cap.get(), CHUNK_ALIGN)) };
            }
            let cap = demand.next_power_of_two();
            let layout = layout(cap, CHUNK_ALIGN);
            // SAFETY: `cap` is not zero.
            let p = unsafe { alloc::alloc(layout) };
            if p.is_null() {
                alloc::handle_alloc_error(layout);
            }
            self.base.set(p as usize);
            self.cap.set(cap);
        }
    }
}

fn layout(size: usize, align: usize) -> Layout {
    match Layout::from_size_align(size, align) {
        Ok(layout) => layout,
        Err(_) => panic!("cabi_realloc: bad layout ({size} bytes, align {align})"),
    }
}

/// The component's `cabi_realloc` (replaces the weak one of Rust's `std`).
///
/// # Safety
///
/// Called by the host with the canonical ABI's contract: `old_ptr` is null
/// or an allocation of `old_len` bytes made by this function with `align`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        // An empty list: any aligned, non-null pointer.
        return align as *mut u8;
    }
    if old_len == 0
        && let Some(p) = ARENA.with(|a| a.active.get().then(|| a.alloc(new_len, align)))
    {
        return p;
    }
    let p = if old_len == 0 {
        // SAFETY: `new_len` is not zero.
        unsafe { alloc::alloc(layout(new_len, align)) }
    } else {
        // SAFETY: per the contract above.
        unsafe { alloc::realloc(old_ptr, layout(old_len, align), new_len) }
    };
    if p.is_null() {
        alloc::handle_alloc_error(layout(new_len, align));
    }
    p
}

/// Whether `init` succeeded (see [`ready`]).
pub(crate) fn is_ready() -> bool {
    ARENA.with(|a| a.ready.get())
}

/// `init` succeeded: from now on the host lowers `process` arguments into
/// the arena.
pub(crate) fn ready() {
    ARENA.with(|a| {
        a.ready.set(true);
        a.active.set(true);
    });
}

/// Reads `len` bytes at `ptr` of guest memory.
///
/// # Safety
///
/// `ptr..ptr + len` was written by the host and stays untouched for `'a`.
unsafe fn bytes<'a>(ptr: u32, len: u32) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the contract above.
    unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// Reads a `u32` at `base + offset`.
///
/// # Safety
///
/// In bounds of a record the host lowered.
unsafe fn u32_at(base: *const u8, offset: usize) -> u32 {
    // SAFETY: per the contract above.
    unsafe { base.add(offset).cast::<u32>().read_unaligned() }
}

/// Lifts record `i` of the list at `records`.
///
/// # Safety
///
/// `records` holds at least `i + 1` records lowered by the host into memory
/// that stays untouched for `'a`.
unsafe fn record<'a>(records: *const u8, i: usize) -> Record<'a> {
    // SAFETY: per the contract above, for every read below.
    unsafe {
        let r = records.add(i * 48);
        let key = match *r {
            0 => None,
            1 => Some(Cow::Borrowed(bytes(u32_at(r, 4), u32_at(r, 8)))),
            _ => panic!("invalid option discriminant"),
        };
        let value = Cow::Borrowed(bytes(u32_at(r, 12), u32_at(r, 16)));
        let timestamp_ms = match *r.add(24) {
            0 => None,
            1 => Some(r.add(32).cast::<i64>().read_unaligned()),
            _ => panic!("invalid option discriminant"),
        };
        let (headers_ptr, headers_len) = (u32_at(r, 40), u32_at(r, 44));
        let headers = (0..headers_len as usize)
            .map(|h| {
                let h = (headers_ptr as usize as *const u8).add(h * 16);
                Header {
                    name: String::from_utf8_lossy(bytes(u32_at(h, 0), u32_at(h, 4))).into_owned(),
                    value: bytes(u32_at(h, 8), u32_at(h, 12)).to_vec(),
                }
            })
            .collect();
        Record {
            key,
            value,
            timestamp_ms,
            headers,
        }
    }
}

fn addr<T>(p: *const T) -> u32 {
    p as usize as u32
}

fn list<T>(v: &[T]) -> [u32; 2] {
    [addr(v.as_ptr()), v.len() as u32]
}

impl Lowered {
    /// Writes the canonical-ABI image of `outputs` and `rejections`; returns
    /// the address of the `batch-result`.
    fn lower(&mut self, outputs: &[super::Output], rejections: &[super::Rejection]) -> *mut u8 {
        self.headers.clear();
        for o in outputs {
            for h in &o.headers {
                let [np, nl] = list(h.name.as_bytes());
                let [vp, vl] = list(&h.value);
                self.headers.push([np, nl, vp, vl]);
            }
        }
        self.outputs.clear();
        let mut first_header = 0;
        for o in outputs {
            let [sp, sl] = list(o.sink.as_bytes());
            let [kd, kp, kl] = match &o.key {
                Some(k) => {
                    let [kp, kl] = list(k);
                    [1, kp, kl]
                }
                None => [0; 3],
            };
            let [vp, vl] = list(&o.value);
            let headers = &self.headers[first_header..first_header + o.headers.len()];
            first_header += o.headers.len();
            let [hp, hl] = list(headers);
            self.outputs.push([sp, sl, kd, kp, kl, vp, vl, hp, hl]);
        }
        self.rejections.clear();
        for r in rejections {
            let [rp, rl] = list(r.reason.as_bytes());
            self.rejections.push([r.index, rp, rl]);
        }
        let [op, ol] = list(&self.outputs);
        let [rp, rl] = list(&self.rejections);
        self.result = [op, ol, rp, rl];
        self.result.as_mut_ptr().cast()
    }

    /// Encodes `outputs` and `rejections` into one byte list in the grammar
    /// of `wit/packed.wit`; returns the address of that `list<u8>`.
    fn lower_packed(
        &mut self,
        outputs: &[super::Output],
        rejections: &[super::Rejection],
    ) -> *mut u8 {
        let p = &mut self.packed;
        p.clear();
        push_u32(p, outputs.len());
        for o in outputs {
            p.push(u8::from(o.key.is_some()));
            push_list(p, o.sink.as_bytes());
            if let Some(key) = &o.key {
                push_list(p, key);
            }
            push_list(p, &o.value);
            push_u32(p, o.headers.len());
            for h in &o.headers {
                push_list(p, h.name.as_bytes());
                push_list(p, &h.value);
            }
        }
        push_u32(p, rejections.len());
        for r in rejections {
            p.extend_from_slice(&r.index.to_le_bytes());
            push_list(p, r.reason.as_bytes());
        }
        let [lp, ll] = list(p);
        self.result = [lp, ll, 0, 0];
        self.result.as_mut_ptr().cast()
    }
}

/// Lengths fit in 32 bits: everything here lives in a 32-bit memory.
fn push_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn push_list(out: &mut Vec<u8>, bytes: &[u8]) {
    push_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// `handler.process`.
///
/// # Safety
///
/// Called by the component model with a `list<record>` (`records`, `len`)
/// it lowered into this instance's memory.
pub unsafe fn export_process<T: Operator>(
    slot: &Slot<T>,
    records: *const u8,
    len: usize,
) -> *mut u8 {
    // SAFETY: `run_batch` rewinds the arena only after the records are
    // gone.
    run_batch(
        slot,
        (0..len).map(|i| unsafe { record(records, i) }),
        Lowered::lower,
    )
}

/// Runs `records` (lazily decoded, borrowing the arena) through the
/// operator and returns the result as `lower` writes it; the arena is
/// rewound once the records are gone.
fn run_batch<'a, T: Operator>(
    slot: &Slot<T>,
    records: impl Iterator<Item = Record<'a>>,
    lower: fn(&mut Lowered, &[super::Output], &[super::Rejection]) -> *mut u8,
) -> *mut u8 {
    #[cfg(target_arch = "wasm32")]
    wit_bindgen::rt::run_ctors_once();
    ARENA.with(|a| a.active.set(false));
    let mut state = slot.borrow_mut();
    state.process(records);
    let Exported {
        out,
        rejections,
        lowered,
        ..
    } = &mut *state;
    let result = lower(lowered, out.outputs(), rejections);
    ARENA.with(|a| {
        a.rewind();
        a.active.set(true);
    });
    result
}

/// `packed-handler.process-packed` (see `wit/packed.wit`).
///
/// # Safety
///
/// Called by the component model with a `list<u8>` (`batch`, `len`) it
/// lowered into this instance's memory.
pub unsafe fn export_process_packed<T: Operator>(
    slot: &Slot<T>,
    batch: *const u8,
    len: usize,
) -> *mut u8 {
    // SAFETY: the host lowered `len` bytes at `batch`; `run_batch` rewinds
    // the arena only after the records borrowing them are gone.
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(batch, len) }
    };
    run_batch(slot, Packed::new(bytes), Lowered::lower_packed)
}

/// The records of a packed batch, decoded in place. weir encodes the batch,
/// so a malformed one is a bug of the host: it traps.
struct Packed<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Packed<'a> {
    fn new(mut bytes: &'a [u8]) -> Packed<'a> {
        let left = take_u32(&mut bytes);
        Packed { rest: bytes, left }
    }
}

impl<'a> Iterator for Packed<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut self.rest;
        let flags = take(r, 1)[0];
        let timestamp_ms = (flags & 2 != 0).then(|| {
            let mut b = [0; 8];
            b.copy_from_slice(take(r, 8));
            i64::from_le_bytes(b)
        });
        let key = (flags & 1 != 0).then(|| Cow::Borrowed(take_list(r)));
        let value = Cow::Borrowed(take_list(r));
        let headers = (0..take_u32(r))
            .map(|_| Header {
                name: String::from_utf8_lossy(take_list(r)).into_owned(),
                value: take_list(r).to_vec(),
            })
            .collect();
        Some(Record {
            key,
            value,
            timestamp_ms,
            headers,
        })
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
    let Some((head, tail)) = bytes.split_at_checked(n) else {
        panic!("weir_guest: packed batch truncated (the host's encoding is broken)");
    };
    *bytes = tail;
    head
}

fn take_u32(bytes: &mut &[u8]) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(take(bytes, 4));
    u32::from_le_bytes(b)
}

fn take_list<'a>(bytes: &mut &'a [u8]) -> &'a [u8] {
    let n = take_u32(bytes) as usize;
    take(bytes, n)
}
