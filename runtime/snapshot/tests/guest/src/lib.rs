//! Test guest: state in a HashMap and Vecs, optional printing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

wit_bindgen::generate!({ world: "guest", path: "wit" });

#[derive(Default)]
struct State {
    counts: HashMap<String, u64>,
    history: Vec<String>,
    hoard: Vec<Vec<u8>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

struct Impl;

impl Guest for Impl {
    fn process(word: String) -> String {
        STATE.with_borrow_mut(|s| {
            let count = s.counts.entry(word.clone()).or_insert(0);
            *count += 1;
            let count = *count;
            s.history.push(word.clone());
            format!("{word} {count} {} {}", s.counts.len(), s.history.len())
        })
    }

    fn hoard(kib: u32) {
        STATE.with_borrow_mut(|s| {
            let n = s.hoard.len() as u8;
            s.hoard.push(vec![n.wrapping_add(1); kib as usize * 1024]);
        })
    }

    fn print(line: String) {
        println!("{line}");
    }

    fn eprint(line: String) {
        eprintln!("{line}");
    }

    fn state_hash() -> u64 {
        STATE.with_borrow(|s| {
            let mut h = DefaultHasher::new();
            let mut counts: Vec<_> = s.counts.iter().collect();
            counts.sort();
            counts.hash(&mut h);
            s.history.hash(&mut h);
            s.hoard.hash(&mut h);
            h.finish()
        })
    }
}

export!(Impl);
