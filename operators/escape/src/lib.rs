//! `escape`: an operator that tries to leave the sandbox on request, for
//! testing what weir denies (docs/determinism.md, "Denied calls").
//!
//! Per record value:
//!
//! | value     | what it tries                                                    |
//! |-----------|------------------------------------------------------------------|
//! | `file`    | reads `/etc/hostname` with `std::fs` (`wasi:filesystem`)         |
//! | `connect` | opens a TCP connection to 127.0.0.1:9 (`wasi:sockets`)           |
//! | `frob`    | calls `acme:escape/frob.frob`, an import weir does not provide   |
//! | other     | emits `stayed: <value>`                                          |
//!
//! Whatever the call returns is emitted as `<value>: <result>`; under
//! weir's default `strict` policy the component is refused at load, under
//! `trap` each of these calls traps.

/// What the operator does with one record value; `escape` is the way out
/// (the component's imports, or the host's std natively).
pub fn handle(value: &[u8], frob: &dyn Fn() -> u32) -> String {
    match value {
        b"file" => match std::fs::read("/etc/hostname") {
            Ok(bytes) => format!("file: read {} bytes", bytes.len()),
            Err(e) => format!("file: {e}"),
        },
        b"connect" => match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => "connect: connected".to_owned(),
            Err(e) => format!("connect: {e}"),
        },
        b"frob" => format!("frob: {}", frob()),
        other => format!("stayed: {}", String::from_utf8_lossy(other)),
    }
}

#[cfg(feature = "component")]
mod component {
    use weir_guest::{Config, Emitter, Operator, Record, Reject};

    wit_bindgen::generate!({
        inline: "package acme:escape; interface frob { frob: func() -> u32; } world escape { import frob; }",
        world: "escape",
    });

    // Only the wasm export constructs it.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    struct Escape;

    impl Operator for Escape {
        fn init(_: &Config) -> Result<Self, String> {
            Ok(Escape)
        }

        fn process(&mut self, record: &Record, out: &mut Emitter) -> Result<(), Reject> {
            out.emit(super::handle(record.value(), &acme::escape::frob::frob));
            Ok(())
        }
    }

    weir_guest::export_operator!(Escape);
}

#[cfg(test)]
mod tests {
    #[test]
    fn other_values_stay() {
        assert_eq!(super::handle(b"x", &|| 7), "stayed: x");
        assert_eq!(super::handle(b"frob", &|| 7), "frob: 7");
    }
}
