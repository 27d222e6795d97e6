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
//! | other       | `count += 1`, emits `seen {count}: {value}` to the main stream |
//!
//! Config: `init_error` — when set, `init` fails with that text.
//!
//! The logic lives in [`Faulty`] and works natively; the component export is
//! behind the `component` feature.

/// State and behaviour of the `faulty` operator.
#[derive(Debug, Default)]
pub struct Faulty {
    count: u64,
    /// Memory kept alive by `grow`.
    hoard: Vec<Vec<u8>>,
}

/// Size of one chunk allocated by `grow`.
pub const GROW_CHUNK: usize = 1 << 20;

impl Faulty {
    /// A fresh operator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the operator from its config: fails with the text of
    /// `init_error` when that key is set.
    pub fn from_config(config: &[(String, String)]) -> Result<Self, String> {
        match config.iter().find(|(k, _)| k == "init_error") {
            Some((_, msg)) => Err(msg.clone()),
            None => Ok(Self::new()),
        }
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

    #[test]
    fn init_error() {
        assert!(Faulty::from_config(&[]).is_ok());
        let err = Faulty::from_config(&[("init_error".into(), "boom".into())]).unwrap_err();
        assert_eq!(err, "boom");
    }
}
