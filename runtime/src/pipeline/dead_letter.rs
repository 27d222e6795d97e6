//! Dead letters: a record that could not be processed, with why and where,
//! as one JSON line a person or a script can read and replay.

use serde::Serialize;

use crate::record::{Output, Position};

/// Where a problem record came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A source record at this position.
    Source(Position),
    /// An intermediate record, derived from the source records in this range.
    Derived {
        /// First source position of the batch it came from.
        first: Position,
        /// Last source position of that batch.
        last: Position,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Source(p) => write!(f, "{p}"),
            Origin::Derived { first, last } => {
                write!(f, "a record derived from the batch {first} .. {last}")
            }
        }
    }
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    source: &'a str,
    position: String,
    operator: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
}

/// Renders a dead letter as an output for the dead-letter sink.
pub fn render(
    source: &str,
    origin: &Origin,
    operator: Option<&str>,
    reason: &str,
    value: &[u8],
) -> Output {
    let text = std::str::from_utf8(value).ok();
    let letter = DeadLetter {
        source,
        position: origin.to_string(),
        operator,
        reason,
        value: text,
        value_hex: match text {
            Some(_) => None,
            None => Some(value.iter().map(|b| format!("{b:02x}")).collect()),
        },
    };
    let json = serde_json::to_vec(&letter)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    Output {
        sink: String::new(),
        key: None,
        value: json,
        headers: Vec::new(),
    }
}
