//! The optional packed batch of `wit/packed.wit`: the records of a batch
//! encoded into one byte list, so lowering a batch into the guest is one
//! allocation and one copy instead of a guest allocator call per field.

use wasmtime::component::{Func, Instance};
use wasmtime::{AsContextMut, Store};

use crate::record::{BatchResult, Record};

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
        func.typed::<(&[u8],), (BatchResult,)>(&*store)?;
        Ok(Some(ProcessPacked(func)))
    }

    /// Calls it with a batch encoded by [`encode`].
    pub(super) fn call(
        self,
        mut store: impl AsContextMut,
        packed: &[u8],
    ) -> wasmtime::Result<BatchResult> {
        let typed = self.0.typed::<(&[u8],), (BatchResult,)>(&store)?;
        let (result,) = typed.call(store.as_context_mut(), (packed,))?;
        Ok(result)
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

fn push_list(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let Ok(len) = u32::try_from(bytes.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;

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
