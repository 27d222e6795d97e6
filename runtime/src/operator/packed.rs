//! The optional packed batch of `wit/packed.wit`: the records of a batch
//! encoded into one byte list, so lowering a batch into the guest is one
//! allocation and one copy instead of a guest allocator call per field; the
//! result comes back as one byte list too, decoded here.

use wasmtime::component::{Func, Instance, TypedFunc, WasmList};
use wasmtime::{AsContextMut, Store};

use crate::record::{BatchResult, Header, Output, Record, Rejection};

/// The function's type.
type Signature<'a> = TypedFunc<(&'a [u8],), (WasmList<u8>,)>;

/// The optional export, and its function.
const EXPORT: &str = "weir:operator/packed-handler@0.1.0";
const FUNCTION: &str = "process-packed";

/// Set (to anything) to call `handler.process` even when a component
/// exports `process-packed`: for the benchmark's comparison and the tests of
/// the v0.1 path.
pub const NO_PACKED_BATCHES_ENV: &str = "WEIR_NO_PACKED_BATCHES";

/// `process-packed` of an instance that exports it with the expected type.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProcessPacked(Func);

impl ProcessPacked {
    /// Finds the export; `None` if the component does not have it (it then
    /// gets `handler.process`). An export of that name with another type is
    /// an error, not a silent fallback.
    pub(super) fn find<T>(
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<ProcessPacked>> {
        if std::env::var_os(NO_PACKED_BATCHES_ENV).is_some() {
            return Ok(None);
        }
        let Some(interface) = instance.get_export_index(&mut *store, None, EXPORT) else {
            return Ok(None);
        };
        let Some(function) = instance.get_export_index(&mut *store, Some(&interface), FUNCTION)
        else {
            return Ok(None);
        };
        let Some(func) = instance.get_func(&mut *store, function) else {
            return Ok(None);
        };
        let _: Signature<'_> = func.typed(&*store)?;
        Ok(Some(ProcessPacked(func)))
    }

    /// Calls it with a batch encoded by [`encode`] and decodes the result.
    pub(super) fn call<T: 'static>(
        self,
        store: &mut Store<T>,
        packed: &[u8],
    ) -> wasmtime::Result<BatchResult> {
        let typed: Signature<'_> = self.0.typed(&*store)?;
        let (result,) = typed.call(store.as_context_mut(), (packed,))?;
        decode_result(result.as_le_slice(&*store)).map_err(|e| {
            wasmtime::Error::msg(format!(
                "`process-packed` returned a malformed result: {e} (see wit/packed.wit)"
            ))
        })
    }
}

const KEY: u8 = 1;
const TIMESTAMP: u8 = 2;

/// Encodes `batch` into `out` (cleared first) in the grammar of
/// `wit/packed.wit`. `false` if a length does not fit in 32 bits; such a
/// batch could not be lowered into a 32-bit guest either way.
pub(super) fn encode(batch: &[Record], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Ok(count) = u32::try_from(batch.len()) else {
        return false;
    };
    out.extend_from_slice(&count.to_le_bytes());
    for record in batch {
        let flags = if record.key.is_some() { KEY } else { 0 }
            | if record.timestamp_ms.is_some() {
                TIMESTAMP
            } else {
                0
            };
        out.push(flags);
        if let Some(ts) = record.timestamp_ms {
            out.extend_from_slice(&ts.to_le_bytes());
        }
        if let Some(key) = &record.key
            && !push_list(out, key)
        {
            return false;
        }
        if !push_list(out, &record.value) {
            return false;
        }
        let Ok(headers) = u32::try_from(record.headers.len()) else {
            return false;
        };
        out.extend_from_slice(&headers.to_le_bytes());
        for header in &record.headers {
            if !push_list(out, header.name.as_bytes()) || !push_list(out, &header.value) {
                return false;
            }
        }
    }
    true
}

/// Decodes the result grammar of `wit/packed.wit`.
fn decode_result(bytes: &[u8]) -> Result<BatchResult, String> {
    let mut r = Reader { bytes, at: 0 };
    let outputs = (0..r.u32()?)
        .map(|_| {
            let flags = r.take(1)?[0];
            if flags & !KEY != 0 {
                return Err(format!(
                    "unknown output flags {flags:#04x} at byte {}",
                    r.at - 1
                ));
            }
            let sink = r.string()?;
            let key = if flags & KEY != 0 {
                Some(r.list()?.to_vec())
            } else {
                None
            };
            let value = r.list()?.to_vec();
            let headers = (0..r.u32()?)
                .map(|_| {
                    Ok(Header {
                        name: r.string()?,
                        value: r.list()?.to_vec(),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Output {
                sink,
                key,
                value,
                headers,
            })
        })
        .collect::<Result<_, String>>()?;
    let rejections = (0..r.u32()?)
        .map(|_| {
            Ok(Rejection {
                index: r.u32()?,
                reason: r.string()?,
            })
        })
        .collect::<Result<_, String>>()?;
    if r.at != bytes.len() {
        return Err(format!(
            "{} trailing bytes at byte {}",
            bytes.len() - r.at,
            r.at
        ));
    }
    Ok(BatchResult {
        outputs,
        rejections,
    })
}

/// A cursor over a packed result; errors name the byte offset.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "{n} bytes wanted at byte {} of {}",
                self.at,
                self.bytes.len()
            ));
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn list(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let at = self.at;
        let bytes = self.list()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(format!("invalid UTF-8 in the string at byte {at}")),
        }
    }
}

fn push_list(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let Ok(len) = u32::try_from(bytes.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Header;

    #[test]
    fn decodes_the_documented_result_and_names_what_is_malformed() {
        let mut bytes = vec![2, 0, 0, 0];
        bytes.extend_from_slice(&[
            1, 1, 0, 0, 0, b's', 1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'w',
        ]);
        bytes.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'h', 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[1, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, b'n', b'o']);
        let result = decode_result(&bytes).unwrap();
        let outputs: Vec<_> = result
            .outputs
            .iter()
            .map(|o| {
                let headers: Vec<_> = o
                    .headers
                    .iter()
                    .map(|h| (h.name.as_str(), &h.value[..]))
                    .collect();
                (o.sink.as_str(), o.key.as_deref(), &o.value[..], headers)
            })
            .collect();
        assert_eq!(
            outputs,
            [
                ("s", Some(&b"k"[..]), &b"vw"[..], vec![("h", &b""[..])]),
                ("", None, &b""[..], vec![]),
            ]
        );
        let rejections: Vec<_> = result
            .rejections
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(rejections, [(7, "no")]);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode_result(&trailing).unwrap_err(),
            format!("1 trailing bytes at byte {}", bytes.len())
        );
        assert_eq!(
            decode_result(&bytes[..10]).unwrap_err(),
            "4 bytes wanted at byte 10 of 10"
        );
        let mut flags = bytes.clone();
        flags[4] = 4;
        assert_eq!(
            decode_result(&flags).unwrap_err(),
            "unknown output flags 0x04 at byte 4"
        );
        let mut utf8 = bytes.clone();
        utf8[9] = 0xff;
        assert_eq!(
            decode_result(&utf8).unwrap_err(),
            "invalid UTF-8 in the string at byte 5"
        );
    }

    #[test]
    fn encodes_the_documented_grammar() {
        let batch = [
            Record {
                key: Some(b"k".to_vec()),
                value: b"vv".to_vec(),
                timestamp_ms: Some(-2),
                headers: vec![Header {
                    name: "h".into(),
                    value: b"x".to_vec(),
                }],
            },
            Record {
                key: None,
                value: Vec::new(),
                timestamp_ms: None,
                headers: Vec::new(),
            },
        ];
        let mut out = vec![9; 3];
        assert!(encode(&batch, &mut out));
        let mut expected = vec![2, 0, 0, 0, 3];
        expected.extend_from_slice(&(-2i64).to_le_bytes());
        expected.extend_from_slice(&[1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']);
        expected.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'h', 1, 0, 0, 0, b'x']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(out, expected);
    }
}
