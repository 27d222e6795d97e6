//! `payments-dedup`: drops duplicate payments within a time-to-live and keeps
//! a running balance and payment count per merchant.
//!
//! Input value: one CSV line with exactly 7 fields,
//! `idempotency_key,merchant,amount_cents,currency,created_ms,card,description`.
//!
//! Config: `ttl_minutes` (integer ≥ 0, default 60).
//!
//! Per record (with `W` the largest `created_ms` seen so far, updated before
//! the duplicate check, and `ttl_ms = ttl_minutes * 60_000`):
//!
//! * a record that does not parse is rejected and changes no state;
//! * it is a duplicate, and emits nothing, iff its key was accepted before
//!   with a `created_ms >= W - ttl_ms`;
//! * otherwise it is accepted: the key's `created_ms` is remembered, the
//!   merchant's balance and count grow, and
//!   `{merchant},{key},{amount_cents},{currency},{balance},{count}` is emitted
//!   to the main stream, keyed by the merchant.
//!
//! The logic is [`PaymentsDedup`], usable natively; the component export is
//! behind the `component` feature.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Config key for the time-to-live in minutes.
pub const TTL_MINUTES: &str = "ttl_minutes";
/// Default for [`TTL_MINUTES`].
pub const DEFAULT_TTL_MINUTES: i64 = 60;

/// The `payments-dedup` operator state.
#[derive(Debug)]
pub struct PaymentsDedup {
    ttl_ms: i64,
    /// `W`: the largest `created_ms` of any parsed record (`i64::MIN` before
    /// the first, which is below or equal to every value).
    watermark: i64,
    /// `created_ms` of the last accepted payment per key of the form
    /// `pay-` + 12 digits, keyed by the digits' value.
    seen_num: HashMap<u64, i64, FastBuild>,
    /// The same for every other key.
    seen_other: HashMap<Box<[u8]>, i64, FastBuild>,
    /// `(created_ms, key)` of accepted compact keys in arrival order, for
    /// amortized eviction (16 bytes an entry).
    expiry_num: VecDeque<(i64, u64)>,
    /// The same for other keys.
    expiry_other: VecDeque<(i64, Box<[u8]>)>,
    merchants: HashMap<Box<[u8]>, MerchantTotals, FastBuild>,
    /// Reused output buffer.
    out: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct MerchantTotals {
    balance: u128,
    count: u64,
}

/// `pay-` followed by exactly 12 ASCII digits maps one-to-one onto the
/// digits' value; any other key stays bytes, so distinct keys never collide.
fn compact_key(key: &[u8]) -> Option<u64> {
    let digits = key.strip_prefix(b"pay-")?;
    if digits.len() != 12 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// The parsed fields of one payment line.
struct Payment<'a> {
    key: &'a [u8],
    merchant: &'a [u8],
    amount_cents: u64,
    currency: &'a [u8],
    created_ms: i64,
}

impl PaymentsDedup {
    /// An operator with the given time-to-live in milliseconds.
    pub fn new(ttl_ms: i64) -> Self {
        PaymentsDedup {
            ttl_ms,
            watermark: i64::MIN,
            seen_num: HashMap::default(),
            seen_other: HashMap::default(),
            expiry_num: VecDeque::new(),
            expiry_other: VecDeque::new(),
            merchants: HashMap::default(),
            out: Vec::with_capacity(128),
        }
    }

    /// Builds the operator from its config table: `ttl_minutes` (integer
    /// ≥ 0, default 60). Unknown keys are an error.
    pub fn from_config(config: &[(String, String)]) -> Result<Self, String> {
        let mut ttl_minutes = DEFAULT_TTL_MINUTES;
        for (key, value) in config {
            if key != TTL_MINUTES {
                return Err(format!("unknown config key `{key}` (known: {TTL_MINUTES})"));
            }
            ttl_minutes = value
                .parse()
                .map_err(|e| format!("config `{TTL_MINUTES}`: invalid value '{value}' ({e})"))?;
        }
        if ttl_minutes < 0 {
            return Err(format!(
                "config `{TTL_MINUTES}`: invalid value '{ttl_minutes}' (must not be negative)"
            ));
        }
        let ttl_ms = ttl_minutes.checked_mul(60_000).ok_or_else(|| {
            format!("config `{TTL_MINUTES}`: invalid value '{ttl_minutes}' (too large)")
        })?;
        Ok(Self::new(ttl_ms))
    }

    /// The time-to-live in milliseconds.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Number of remembered keys (expired ones may not have been evicted
    /// yet).
    pub fn remembered_keys(&self) -> usize {
        self.seen_num.len() + self.seen_other.len()
    }

    /// Processes one record value. Calls `emit(key, value)` for each output
    /// (at most one); `Err(reason)` rejects the record, which then changed no
    /// state.
    pub fn process(
        &mut self,
        value: &[u8],
        emit: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), String> {
        let p = parse(value)?;

        self.watermark = self.watermark.max(p.created_ms);
        // i128: exact for every ttl and watermark.
        let cutoff = i128::from(self.watermark) - i128::from(self.ttl_ms);

        match compact_key(p.key) {
            // One hash lookup for the common key form.
            Some(n) => match self.seen_num.entry(n) {
                Entry::Occupied(e) if i128::from(*e.get()) >= cutoff => return Ok(()),
                Entry::Occupied(mut e) => {
                    e.insert(p.created_ms);
                    self.expiry_num.push_back((p.created_ms, n));
                }
                Entry::Vacant(e) => {
                    e.insert(p.created_ms);
                    self.expiry_num.push_back((p.created_ms, n));
                }
            },
            None => {
                if self
                    .seen_other
                    .get(p.key)
                    .is_some_and(|&t| i128::from(t) >= cutoff)
                {
                    return Ok(());
                }
                let key: Box<[u8]> = p.key.into();
                self.seen_other.insert(key.clone(), p.created_ms);
                self.expiry_other.push_back((p.created_ms, key));
            }
        }
        self.evict(cutoff);

        let totals = match self.merchants.get_mut(p.merchant) {
            Some(t) => t,
            None => self.merchants.entry(p.merchant.into()).or_default(),
        };
        totals.balance += u128::from(p.amount_cents);
        totals.count += 1;
        let totals = *totals;

        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(p.merchant);
        out.push(b',');
        out.extend_from_slice(p.key);
        out.push(b',');
        push_u64(out, p.amount_cents);
        out.push(b',');
        out.extend_from_slice(p.currency);
        out.push(b',');
        push_u128(out, totals.balance);
        out.push(b',');
        push_u64(out, totals.count);
        emit(p.merchant, out);
        Ok(())
    }

    /// Forgets keys whose `created_ms` is below `cutoff` (they can no longer
    /// make a record a duplicate, and `W` never decreases). Walks the arrival
    /// queue from the front and stops at the first entry still live, so the
    /// cost is amortized O(1) per accepted record.
    fn evict(&mut self, cutoff: i128) {
        let expired = |t: i64| i128::from(t) < cutoff;
        while let Some(&(created_ms, n)) = self.expiry_num.front()
            && expired(created_ms)
        {
            self.expiry_num.pop_front();
            // The key may have been accepted again since: only drop it if
            // its current entry has expired too.
            if let Entry::Occupied(e) = self.seen_num.entry(n)
                && expired(*e.get())
            {
                e.remove();
            }
        }
        while let Some((created_ms, _)) = self.expiry_other.front()
            && expired(*created_ms)
        {
            if let Some((_, key)) = self.expiry_other.pop_front()
                && self.seen_other.get(&key).is_some_and(|&t| expired(t))
            {
                self.seen_other.remove(&key);
            }
        }
    }
}

fn parse(value: &[u8]) -> Result<Payment<'_>, String> {
    if std::str::from_utf8(value).is_err() {
        return Err("record is not UTF-8".to_owned());
    }
    let mut fields: [&[u8]; 7] = [&[]; 7];
    let mut n = 0usize;
    let mut start = 0usize;
    for (i, &b) in value.iter().enumerate() {
        if b == b',' {
            if let Some(f) = fields.get_mut(n) {
                *f = &value[start..i];
            }
            n += 1;
            start = i + 1;
        }
    }
    if let Some(f) = fields.get_mut(n) {
        *f = &value[start..];
    }
    n += 1;
    if n != 7 {
        return Err(format!("expected 7 comma-separated fields, got {n}"));
    }
    let [
        key,
        merchant,
        amount,
        currency,
        created,
        _card,
        _description,
    ] = fields;
    let amount_cents = parse_u64(amount).map_err(|bad| match bad {
        BadNumber::Syntax => format!(
            "amount_cents is not a non-negative integer: '{}'",
            String::from_utf8_lossy(amount)
        ),
        BadNumber::Range => format!(
            "amount_cents is out of range: '{}'",
            String::from_utf8_lossy(amount)
        ),
    })?;
    let created_ms = parse_i64(created).map_err(|bad| match bad {
        BadNumber::Syntax => format!(
            "created_ms is not an integer: '{}'",
            String::from_utf8_lossy(created)
        ),
        BadNumber::Range => format!(
            "created_ms is out of range: '{}'",
            String::from_utf8_lossy(created)
        ),
    })?;
    Ok(Payment {
        key,
        merchant,
        amount_cents,
        currency,
        created_ms,
    })
}

/// Why a numeric field did not parse.
enum BadNumber {
    /// Not of the form the field requires.
    Syntax,
    /// Well-formed, but outside the 64-bit range.
    Range,
}

/// One or more ASCII digits, within `u64`.
fn parse_u64(s: &[u8]) -> Result<u64, BadNumber> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(BadNumber::Syntax);
    }
    // Up to 19 digits always fit in a u64. Only longer numbers need checked
    // arithmetic, which on wasm32 costs a 128-bit multiply call per digit.
    if s.len() <= 19 {
        return Ok(s.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')));
    }
    let mut n: u64 = 0;
    for &b in s {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(BadNumber::Range)?;
    }
    Ok(n)
}

/// An optional `-` and one or more ASCII digits, within `i64`.
fn parse_i64(s: &[u8]) -> Result<i64, BadNumber> {
    match s.strip_prefix(b"-") {
        Some(digits) => {
            let n = parse_u64(digits)?;
            0i64.checked_sub_unsigned(n).ok_or(BadNumber::Range)
        }
        None => i64::try_from(parse_u64(s)?).map_err(|_| BadNumber::Range),
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_u128(out: &mut Vec<u8>, n: u128) {
    match u64::try_from(n) {
        Ok(small) => push_u64(out, small),
        Err(_) => out.extend_from_slice(n.to_string().as_bytes()),
    }
}

/// A fast, deterministic hasher (the rustc-hash v2 scheme). Not resistant
/// to adversarially chosen keys, which only costs speed, never correctness.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

type FastBuild = BuildHasherDefault<FastHasher>;

const HASH_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = self.0.wrapping_add(x).wrapping_mul(HASH_K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

#[cfg(feature = "component")]
mod component {
    use super::PaymentsDedup;
    use weir_guest::{Config, Emitter, Operator, Record, Reject};

    impl Operator for PaymentsDedup {
        fn init(config: &Config) -> Result<Self, String> {
            PaymentsDedup::from_config(config.as_slice())
        }

        fn process(&mut self, record: &Record, out: &mut Emitter) -> Result<(), Reject> {
            PaymentsDedup::process(self, record.value(), &mut |k, v| out.emit_keyed(k, v))
                .map_err(Reject::from)
        }
    }

    weir_guest::export_operator!(PaymentsDedup);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
