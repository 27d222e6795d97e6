//! The tracker on a real wasmtime linear memory.

#![cfg(target_os = "linux")]

use std::ops::Range;

use wasmtime::{Config, Engine, Instance, Memory, Module, Store, TypedFunc};
use weir_dirty::{DirtyTracker, TrackError, granules};

const OS_PAGE: usize = 4096;
const WASM_PAGE: usize = 65536;

/// Four wasm pages; a data segment on wasm page 1 (so, with wasmtime's
/// default copy-on-write initialisation, a private memfd mapping laid over
/// that part of the memory); functions to write, read and grow.
const WAT: &str = r#"
(module
  (memory (export "mem") 4)
  (data (i32.const 0x10000) "hello, data segment")
  (func (export "write") (param $addr i32) (param $val i32)
    (i32.store8 (local.get $addr) (local.get $val)))
  (func (export "read") (param $addr i32) (result i32)
    (i32.load8_u (local.get $addr)))
  (func (export "grow") (param $pages i32) (result i32)
    (memory.grow (local.get $pages))))
"#;

struct Guest {
    store: Store<()>,
    memory: Memory,
    write: TypedFunc<(u32, u32), ()>,
    read: TypedFunc<u32, u32>,
    grow: TypedFunc<u32, i32>,
}

impl Guest {
    fn new(config: &Config) -> Guest {
        let engine = Engine::new(config).expect("engine");
        let wasm = wat::parse_str(WAT).expect("wat");
        let module = Module::new(&engine, wasm).expect("module");
        let mut store = Store::new(&engine, ());
        // Fails (harmlessly) unless the config meters fuel.
        let _ = store.set_fuel(u64::MAX);
        let instance = Instance::new(&mut store, &module, &[]).expect("instance");
        let memory = instance.get_memory(&mut store, "mem").expect("mem");
        let write = instance
            .get_typed_func::<(u32, u32), ()>(&mut store, "write")
            .expect("write");
        let read = instance
            .get_typed_func::<u32, u32>(&mut store, "read")
            .expect("read");
        let grow = instance
            .get_typed_func::<u32, i32>(&mut store, "grow")
            .expect("grow");
        Guest {
            store,
            memory,
            write,
            read,
            grow,
        }
    }

    fn region(&self) -> *const [u8] {
        self.memory.data(&self.store)
    }

    fn write(&mut self, addr: usize, val: u8) {
        let addr = u32::try_from(addr).expect("addr");
        self.write
            .call(&mut self.store, (addr, u32::from(val)))
            .expect("write");
    }

    fn read(&mut self, addr: usize) -> u8 {
        let addr = u32::try_from(addr).expect("addr");
        let v = self.read.call(&mut self.store, addr).expect("read");
        u8::try_from(v).expect("byte")
    }

    fn take(&mut self, tracker: &mut DirtyTracker) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        tracker
            .take(self.memory.data(&self.store), &mut out)
            .expect("take");
        out
    }
}

fn os_pages(list: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &p in list {
        match out.last_mut() {
            Some(last) if last.end == p * OS_PAGE => last.end += OS_PAGE,
            _ => out.push(p * OS_PAGE..(p + 1) * OS_PAGE),
        }
    }
    out
}

fn tracks_a_wasmtime_memory(config: &Config) {
    let mut g = Guest::new(config);
    assert_eq!(g.region().len(), 4 * WASM_PAGE);
    let mut t = DirtyTracker::new(g.region()).expect("new");
    assert_eq!(g.take(&mut t), vec![0..4 * WASM_PAGE]);
    assert_eq!(g.take(&mut t), vec![]);

    // Guest writes: OS page 0, OS page 16 (the data segment's page: its
    // last byte, past the segment's bytes), OS page 51; guest reads
    // elsewhere (a never-touched page, the segment itself) are not writes.
    g.write(0x10, 1);
    g.write(0x10000 + 0x1000 - 1, 2); // last byte of OS page 16
    g.write(3 * WASM_PAGE + 3 * OS_PAGE, 3);
    assert_eq!(g.read(0x20000), 0);
    assert_eq!(g.read(0x10000), b'h');
    assert_eq!(g.read(0x10001 + 0x1000), 0); // OS page 17, in the image
    let written = g.take(&mut t);
    assert_eq!(written, os_pages(&[0, 16, 51]));
    assert_eq!(
        granules(&written, WASM_PAGE).collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    assert_eq!(g.take(&mut t), vec![]);

    // Data segment bytes: a guest write to them is a write (first write to
    // a file-backed private page: copy-on-write).
    g.write(0x10003, b'L');
    assert_eq!(g.take(&mut t), os_pages(&[16]));
    assert_eq!(&g.memory.data(&g.store)[0x10000..0x10005], b"helLo");

    // Host writes through Memory::data_mut are writes too.
    g.memory.data_mut(&mut g.store)[2 * WASM_PAGE + 5 * OS_PAGE] = 9;
    assert_eq!(g.take(&mut t), os_pages(&[37]));

    // memory.grow from inside the guest, and writes to old and new pages
    // before the host learns about it.
    let base_before = g.region().cast::<u8>();
    let old = g.grow.call(&mut g.store, 2).expect("grow");
    assert_eq!(old, 4);
    assert_eq!(
        g.region().cast::<u8>(),
        base_before,
        "a 32-bit memory does not move"
    );
    g.write(5 * WASM_PAGE + 7, 1);
    g.write(1, 1);
    let mut out = Vec::new();
    assert!(matches!(
        t.take(g.region(), &mut out),
        Err(TrackError::InvalidRegion(_))
    ));
    t.grow(g.region()).expect("grow");
    assert_eq!(
        g.take(&mut t),
        vec![0..OS_PAGE, 4 * WASM_PAGE..6 * WASM_PAGE],
        "old page 0 and all of the grown range"
    );
    assert_eq!(g.take(&mut t), vec![]);
    g.write(5 * WASM_PAGE + 7, 2);
    g.write(4 * WASM_PAGE, 2);
    assert_eq!(g.take(&mut t), os_pages(&[64, 80]));
    assert_eq!(g.read(5 * WASM_PAGE + 7), 2);

    // Dropping the tracker leaves the memory working.
    drop(t);
    for p in 0..6 * WASM_PAGE / OS_PAGE {
        g.write(p * OS_PAGE, 7);
    }
    assert_eq!(g.read(5 * WASM_PAGE), 7);
}

/// The `/proc/self/maps` line of the mapping that holds `addr`.
fn mapping_of(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines()
        .find(|line| {
            let range = line.split(' ').next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
            let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
            lo <= addr && addr < hi
        })
        .unwrap_or("")
        .to_owned()
}

#[test]
fn default_config() {
    // Check that the memory looks as the crate docs say: anonymous
    // read-write memory, the data segment's page a private mapping of
    // wasmtime's memfd image, and a PROT_NONE reservation after the end.
    let g = Guest::new(&Config::new());
    let base = g.region().cast::<u8>() as usize;
    let len = g.region().len();
    assert!(mapping_of(base).contains(" rw-p "), "{}", mapping_of(base));
    let image = mapping_of(base + 0x10000);
    assert!(
        image.contains(" rw-p ") && image.contains("wasm-memory-image"),
        "{image}"
    );
    assert!(
        mapping_of(base + len).contains(" ---p "),
        "{}",
        mapping_of(base + len)
    );
    drop(g);

    tracks_a_wasmtime_memory(&Config::new());
}

#[test]
fn weir_like_config() {
    // What weir's engine sets (runtime/src/operator/engine.rs): none of it
    // changes how linear memory is mapped, but check anyway.
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(1 << 20);
    tracks_a_wasmtime_memory(&config);
}

#[test]
fn without_copy_on_write_initialisation() {
    // The data segment is then copied into anonymous memory instead.
    let mut config = Config::new();
    config.memory_init_cow(false);
    tracks_a_wasmtime_memory(&config);
}

#[test]
fn instance_dropped_before_tracker() {
    let g = Guest::new(&Config::new());
    let region = g.region();
    let mut t = DirtyTracker::new(region).expect("new");
    drop(g); // wasmtime unmaps the memory
    let mut out = Vec::new();
    assert!(t.take(region, &mut out).is_err(), "the region is gone");
    assert!(out.is_empty());
    drop(t);
    // A new instance (perhaps at the same address) is unaffected.
    tracks_a_wasmtime_memory(&Config::new());
}
