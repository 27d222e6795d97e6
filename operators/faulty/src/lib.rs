//! `faulty`: an operator that misbehaves on request, for testing how weir
//! handles traps, runaway loops, memory exhaustion, rejections and logging.
//!
//! Per record value:
//!
//! | value       | effect                                                        |
//! |-------------|---------------------------------------------------------------|
//! | `trap`      | panics (the component traps)                                  |
//! | `spin`      | loops forever (burns fuel until weir's budget stops it)       |
//! | `grow`      | allocates 1 MiB chunks forever, keeping them (memory.grow fails eventually) |
//! | `reject`    | rejects the record: `faulty: rejected on request`             |
//! | `log:<msg>` | logs `<msg>` at info level, then behaves like the default     |
//! | `print:<msg>` | prints `<msg>` to stdout and `<msg>` to stderr (std's `println!`/`eprintln!`: the guest then holds WASI stream handles), then behaves like the default |
//! | `touch:<permille>` | changes one byte in each of `<permille>`/1000 of the ballast's 64 KiB pages (rounded to the nearest page; 0..=1000, else the record is rejected), the pages after those the previous `touch` changed (wrapping around), then behaves like the default |
//! | other       | `count += 1`, emits `seen {count}: {value}` to the main stream |
//!
//! Config:
//!
//! | key           | effect                                                      |
//! |---------------|-------------------------------------------------------------|
//! | `init_error`  | when set, `init` fails with that text                       |
//! | `ballast_mib` | `init` allocates this many MiB (default 0), aligned to 64 KiB and filled with a non-zero pattern that depends on the position (so no two 64 KiB pages are equal), and keeps them: state of a known size for checkpoint benchmarks. Not a whole number: `init` fails |
//!
//! The logic lives in [`Faulty`] and works natively; the component export is
//! behind the `component` feature.

/// State and behaviour of the `faulty` operator.
#[derive(Debug, Default)]
pub struct Faulty {
    count: u64,
    /// Memory kept alive by `grow`.
    hoard: Vec<Vec<u8>>,
    /// `ballast_mib` MiB, plus up to one page of slack for alignment; the
    /// ballast proper is `ballast[ballast_start..][..ballast_len]`.
    ballast: Vec<u8>,
    ballast_start: usize,
    ballast_len: usize,
    /// Pages changed by `touch` so far: the next one changed is this one
    /// modulo the number of pages.
    touched: u64,
}

/// Size of one chunk allocated by `grow`.
pub const GROW_CHUNK: usize = 1 << 20;

/// The page size `touch` works in: a checkpoint page (and a WebAssembly
/// page).
pub const BALLAST_PAGE: usize = 1 << 16;

/// The byte at `offset` of a fresh ballast: every 8-byte word is its index
/// plus one times an odd constant (a bijection, so no two words and no two
/// pages are equal, and no word is zero).
pub fn ballast_pattern(offset: usize) -> u8 {
    let word = ballast_word(offset / 8);
    word.to_le_bytes()[offset % 8]
}

fn ballast_word(index: usize) -> u64 {
    (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Faulty {
    /// A fresh operator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the operator from its config: fails with the text of
    /// `init_error` when that key is set; allocates and fills
    /// `ballast_mib` MiB.
    pub fn from_config(config: &[(String, String)]) -> Result<Self, String> {
        if let Some((_, msg)) = config.iter().find(|(k, _)| k == "init_error") {
            return Err(msg.clone());
        }
        let mut op = Self::new();
        if let Some((_, mib)) = config.iter().find(|(k, _)| k == "ballast_mib") {
            let mib: usize = mib
                .trim()
                .parse()
                .map_err(|_| format!("ballast_mib must be a whole number of MiB, not `{mib}`"))?;
            let len = mib
                .checked_mul(1 << 20)
                .ok_or_else(|| format!("ballast_mib = {mib} is too large"))?;
            op.fill_ballast(len);
        }
        Ok(op)
    }

    fn fill_ballast(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        let mut ballast = vec![0u8; len + BALLAST_PAGE];
        let start = ballast.as_ptr().align_offset(BALLAST_PAGE);
        for (i, word) in ballast[start..start + len].chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&ballast_word(i).to_le_bytes());
        }
        self.ballast = ballast;
        self.ballast_start = start;
        self.ballast_len = len;
    }

    /// The ballast (`ballast_mib` MiB, 64 KiB-aligned).
    pub fn ballast(&self) -> &[u8] {
        &self.ballast[self.ballast_start.min(self.ballast.len())..][..self.ballast_len]
    }

    /// Changes one byte in each of `permille`/1000 of the ballast's pages
    /// (rounded to the nearest page), starting after the page the previous
    /// call changed last and wrapping around. A page's `r`-th change adds 1
    /// to its byte `r` (modulo the page size), so a page never returns to a
    /// content it had before (before its 2^24th change). Returns how many pages
    /// changed.
    pub fn touch(&mut self, permille: u32) -> usize {
        let pages = self.ballast_len / BALLAST_PAGE;
        if pages == 0 {
            return 0;
        }
        let count = (pages * permille.min(1000) as usize + 500) / 1000;
        let start = self.ballast_start;
        for _ in 0..count {
            let page = (self.touched % pages as u64) as usize;
            let round = (self.touched / pages as u64) as usize;
            let at = start + page * BALLAST_PAGE + round % BALLAST_PAGE;
            self.ballast[at] = self.ballast[at].wrapping_add(1);
            self.touched += 1;
        }
        count
    }

    /// How many records took the default path so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Handles one record value. `emit(value)` writes to the main stream,
    /// `log(message)` logs at info level. `Err(reason)` rejects the record.
    pub fn process(
        &mut self,
        value: &[u8],
        emit: &mut impl FnMut(&[u8]),
        log: &mut impl FnMut(&str),
    ) -> Result<(), String> {
        match value {
            b"trap" => panic!("faulty: trap requested"),
            b"spin" => spin(),
            b"grow" => self.grow(),
            b"reject" => Err("faulty: rejected on request".to_owned()),
            _ => {
                if let Some(permille) = value.strip_prefix(b"touch:") {
                    let permille = std::str::from_utf8(permille)
                        .ok()
                        .and_then(|p| p.parse::<u32>().ok())
                        .filter(|&p| p <= 1000)
                        .ok_or_else(|| {
                            format!(
                                "faulty: touch wants a per-mille in 0..=1000, not `{}`",
                                String::from_utf8_lossy(permille)
                            )
                        })?;
                    self.touch(permille);
                }
                if let Some(msg) = value.strip_prefix(b"log:") {
                    log(&String::from_utf8_lossy(msg));
                }
                if let Some(msg) = value.strip_prefix(b"print:") {
                    let msg = String::from_utf8_lossy(msg);
                    println!("{msg}");
                    eprintln!("{msg}");
                }
                self.count += 1;
                let mut out = format!("seen {}: ", self.count).into_bytes();
                out.extend_from_slice(value);
                emit(&out);
                Ok(())
            }
        }
    }

    fn grow(&mut self) -> ! {
        loop {
            let mut chunk = vec![0u8; GROW_CHUNK];
            // Touch every page so the memory is really in use.
            for byte in chunk.iter_mut().step_by(4096) {
                *byte = 1;
            }
            self.hoard.push(std::hint::black_box(chunk));
        }
    }
}

/// Loops forever; `black_box` keeps the optimizer from proving the loop
/// side-effect free.
fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

#[cfg(feature = "component")]
mod component {
    use super::Faulty;
    use weir_guest::{Config, Emitter, Operator, Record, Reject};

    impl Operator for Faulty {
        fn init(config: &Config) -> Result<Self, String> {
            Faulty::from_config(config.as_slice())
        }

        fn process(&mut self, record: &Record, out: &mut Emitter) -> Result<(), Reject> {
            Faulty::process(self, record.value(), &mut |v| out.emit(v), &mut |m| {
                weir_guest::log::info(m)
            })
            .map_err(Reject::from)
        }
    }

    weir_guest::export_operator!(Faulty);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(op: &mut Faulty, value: &[u8]) -> (Result<(), String>, Vec<Vec<u8>>, Vec<String>) {
        let mut out = Vec::new();
        let mut logs = Vec::new();
        let r = op.process(value, &mut |v| out.push(v.to_vec()), &mut |m| {
            logs.push(m.to_owned())
        });
        (r, out, logs)
    }

    #[test]
    fn default_path_counts_across_calls() {
        let mut op = Faulty::new();
        assert_eq!(run(&mut op, b"a").1, vec![b"seen 1: a".to_vec()]);
        let (r, out, logs) = run(&mut op, b"log:hello");
        assert!(r.is_ok());
        assert_eq!(out, vec![b"seen 2: log:hello".to_vec()]);
        assert_eq!(logs, vec!["hello".to_owned()]);
        let (r, out, _) = run(&mut op, b"reject");
        assert_eq!(r, Err("faulty: rejected on request".to_owned()));
        assert!(out.is_empty());
        assert_eq!(run(&mut op, b"b").1, vec![b"seen 3: b".to_vec()]);
        assert_eq!(op.count(), 3);
    }

    #[test]
    #[should_panic(expected = "faulty: trap requested")]
    fn trap_panics() {
        let mut op = Faulty::new();
        let _ = run(&mut op, b"trap");
    }

    fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pages(op: &Faulty) -> Vec<&[u8]> {
        op.ballast().chunks(BALLAST_PAGE).collect()
    }

    #[test]
    fn ballast_is_aligned_distinct_and_not_zero() {
        let op = Faulty::from_config(&config(&[("ballast_mib", "2")])).unwrap();
        let ballast = op.ballast();
        assert_eq!(ballast.len(), 2 << 20);
        assert_eq!(ballast.as_ptr() as usize % BALLAST_PAGE, 0);
        let pages = pages(&op);
        assert_eq!(pages.len(), 32);
        for (i, page) in pages.iter().enumerate() {
            assert!(page.iter().any(|&b| b != 0), "page {i} is all zero");
            assert!(
                !pages[..i].contains(page),
                "page {i} repeats an earlier one"
            );
        }
        for offset in [0, 7, 8, 65_535, 65_536, (2 << 20) - 1] {
            assert_eq!(ballast[offset], ballast_pattern(offset));
        }
        assert_eq!(Faulty::new().ballast().len(), 0);
    }

    #[test]
    fn ballast_config_errors() {
        let err = Faulty::from_config(&config(&[("ballast_mib", "lots")])).unwrap_err();
        assert_eq!(err, "ballast_mib must be a whole number of MiB, not `lots`");
        assert!(Faulty::from_config(&config(&[("ballast_mib", "-1")])).is_err());
        let op = Faulty::from_config(&config(&[("ballast_mib", "0")])).unwrap();
        assert_eq!(op.ballast().len(), 0);
    }

    #[test]
    fn touch_changes_the_requested_share_of_pages_rotating() {
        // 4 MiB: 64 pages.
        let mut op = Faulty::from_config(&config(&[("ballast_mib", "4")])).unwrap();
        let mut history: Vec<Vec<Vec<u8>>> = vec![pages(&op).iter().map(|p| p.to_vec()).collect()];
        let changed = |before: &[Vec<u8>], op: &Faulty| -> Vec<usize> {
            pages(op)
                .iter()
                .zip(before)
                .enumerate()
                .filter(|(_, (now, then))| now[..] != then[..])
                .map(|(i, _)| i)
                .collect()
        };
        // 10% of 64 pages is 6.4: 6 pages, then the next 6.
        let (r, out, _) = run(&mut op, b"touch:100");
        assert!(r.is_ok());
        assert_eq!(out, vec![b"seen 1: touch:100".to_vec()]);
        assert_eq!(changed(&history[0], &op), (0..6).collect::<Vec<_>>());
        history.push(pages(&op).iter().map(|p| p.to_vec()).collect());
        assert!(run(&mut op, b"touch:100").0.is_ok());
        assert_eq!(changed(&history[1], &op), (6..12).collect::<Vec<_>>());
        // 1% of 64 pages rounds to 1 page; 0 changes nothing.
        history.push(pages(&op).iter().map(|p| p.to_vec()).collect());
        assert_eq!(op.touch(10), 1);
        assert_eq!(changed(&history[2], &op), vec![12]);
        assert_eq!(op.touch(0), 0);
        assert_eq!(changed(&history[2], &op), vec![12]);
        // Everything, twice: each page changes each time and never returns
        // to an earlier content.
        for _ in 0..2 {
            let before: Vec<Vec<u8>> = pages(&op).iter().map(|p| p.to_vec()).collect();
            assert_eq!(op.touch(1000), 64);
            assert_eq!(changed(&before, &op), (0..64).collect::<Vec<_>>());
            history.push(pages(&op).iter().map(|p| p.to_vec()).collect());
        }
        let last = &history[history.len() - 1];
        for earlier in &history[..history.len() - 1] {
            for (page, (now, then)) in last.iter().zip(earlier).enumerate() {
                assert_ne!(now, then, "page {page} returned to an earlier content");
            }
        }
        assert_eq!(op.count(), 2);
    }

    #[test]
    fn touch_without_ballast_or_with_a_bad_permille() {
        let mut op = Faulty::new();
        let (r, out, _) = run(&mut op, b"touch:500");
        assert!(r.is_ok());
        assert_eq!(out, vec![b"seen 1: touch:500".to_vec()]);
        let mut op = Faulty::from_config(&config(&[("ballast_mib", "1")])).unwrap();
        let before = op.ballast().to_vec();
        for bad in [&b"touch:1001"[..], b"touch:", b"touch:x", b"touch:-1"] {
            let (r, out, _) = run(&mut op, bad);
            assert!(
                r.unwrap_err()
                    .starts_with("faulty: touch wants a per-mille")
            );
            assert!(out.is_empty());
        }
        assert_eq!(
            op.ballast(),
            &before[..],
            "a rejected touch changes nothing"
        );
        assert_eq!(op.count(), 0);
    }

    #[test]
    fn init_error() {
        assert!(Faulty::from_config(&[]).is_ok());
        let err = Faulty::from_config(&[("init_error".into(), "boom".into())]).unwrap_err();
        assert_eq!(err, "boom");
    }
}
