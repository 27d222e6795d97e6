//! An operator that echoes everything it is given, for the SDK's ABI test
//! (`../abi.rs` builds it for `wasm32-wasip2` and drives it through
//! wasmtime): keys, values, timestamps and headers in; outputs with and
//! without keys and headers, side outputs, large outputs and rejections out.

use weir_guest::{Config, Emitter, Header, Operator, Output, Record, Reject};

/// Counts records; see the crate docs of the test for what it emits.
pub struct Echo {
    seen: u64,
}

impl Operator for Echo {
    fn init(config: &Config) -> Result<Self, String> {
        config.reject_unknown_keys(&[])?;
        Ok(Echo { seen: 0 })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Emitter) -> Result<(), Reject> {
        self.seen += 1;
        let value = record.value();
        // Emitted before a possible rejection, which must discard it.
        out.emit_to(
            "side",
            record.key(),
            format!("n={} ts={:?}", self.seen, record.timestamp_ms()),
        );
        if value.starts_with(b"reject") {
            return Err(Reject::new(format!(
                "rejected {}",
                String::from_utf8_lossy(value)
            )));
        }
        if value.starts_with(b"big") {
            out.emit(vec![b'x'; 300_000]);
        }
        let mut headers = record.headers().to_vec();
        headers.push(Header {
            name: "count".into(),
            value: self.seen.to_string().into_bytes(),
        });
        out.emit_output(Output {
            sink: String::new(),
            key: record.key().map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers,
        });
        if record.key().is_none() {
            out.emit(b"no key");
        }
        Ok(())
    }
}

weir_guest::export_operator!(Echo);
