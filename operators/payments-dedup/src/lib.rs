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

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

mod seen;

use seen::{Seen, SeenTable};

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
    /// `pay-` + 12 digits, keyed by the digits' value; expired keys are
    /// swept a few slots per accepted payment.
    seen_num: SeenTable,
    /// The same for every other key.
    seen_other: HashMap<Box<[u8]>, i64, FastBuild>,
    /// `(created_ms, key)` of accepted other keys in arrival order, for
    /// amortized eviction.
    expiry_other: VecDeque<(i64, Box<[u8]>)>,
    merchants: Merchants,
    /// Reused output buffer.
    out: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct MerchantTotals {
    balance: u128,
    count: u64,
}

/// Totals per merchant. Merchant ids of up to 16 bytes (all of them, in
/// practice) are keyed by their bytes packed into integers, so a lookup
/// hashes and compares three words instead of calling `memcmp`.
#[derive(Debug, Default)]
struct Merchants {
    short: HashMap<ShortKey, MerchantTotals, FastBuild>,
    long: HashMap<Box<[u8]>, MerchantTotals, FastBuild>,
}

impl Merchants {
    fn get_mut(&mut self, merchant: &[u8]) -> &mut MerchantTotals {
        match ShortKey::new(merchant) {
            Some(k) => self.short.entry(k).or_default(),
            None => {
                if !self.long.contains_key(merchant) {
                    self.long.insert(merchant.into(), MerchantTotals::default());
                }
                match self.long.get_mut(merchant) {
                    Some(t) => t,
                    None => unreachable!("inserted above"),
                }
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.short.is_empty() && self.long.is_empty()
    }
}

/// A byte string of at most 16 bytes, one-to-one: its length, its first
/// 8 bytes and its last 8 bytes (overlapping when shorter than 16; bytes
/// past the end of a string shorter than 8 are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ShortKey {
    first: u64,
    last: u64,
    len: u64,
}

impl ShortKey {
    #[inline]
    fn new(b: &[u8]) -> Option<ShortKey> {
        if b.len() > 16 {
            return None;
        }
        let (first, last) = match (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            (Some(f), Some(l)) => (u64::from_le_bytes(*f), u64::from_le_bytes(*l)),
            _ => (pack_le(b), 0),
        };
        Some(ShortKey {
            first,
            last,
            len: b.len() as u64,
        })
    }
}

/// Up to 8 bytes as a little-endian integer (missing bytes are zero).
#[inline]
fn pack_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |w, &byte| (w << 8) | u64::from(byte))
}

/// `pay-` followed by exactly 12 ASCII digits maps one-to-one onto the
/// digits' value; any other key stays bytes, so distinct keys never collide.
fn compact_key(key: &[u8]) -> Option<u64> {
    let digits: &[u8; 12] = key.strip_prefix(b"pay-")?.try_into().ok()?;
    let (high, low) = digits.split_at(8);
    let high = eight_digits(u64::from_le_bytes(high.try_into().ok()?))?;
    // The last 4 digits behind 4 leading zeros.
    let low = u64::from(u32::from_le_bytes(low.try_into().ok()?));
    let low = eight_digits(low << 32 | 0x3030_3030)?;
    Some(high * 10_000 + low)
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
            seen_num: SeenTable::new(),
            seen_other: HashMap::default(),
            expiry_other: VecDeque::new(),
            merchants: Merchants::default(),
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
        // `ttl_ms >= 0`, so this only saturates when the exact `W - ttl` is
        // below `i64::MIN`, where every `created_ms` is at or above both.
        let cutoff = self.watermark.saturating_sub(self.ttl_ms);

        match compact_key(p.key) {
            // The common key form: one probe of a compact table.
            Some(n) => {
                if self.seen_num.accept(n, p.created_ms, cutoff) == Seen::Duplicate {
                    return Ok(());
                }
            }
            None => {
                if self.seen_other.get(p.key).is_some_and(|&t| t >= cutoff) {
                    return Ok(());
                }
                let key: Box<[u8]> = p.key.into();
                self.seen_other.insert(key.clone(), p.created_ms);
                self.expiry_other.push_back((p.created_ms, key));
            }
        }
        // Both kinds of keys expire whichever kind arrives.
        self.seen_num.sweep(cutoff);
        self.evict_other(cutoff);

        let totals = self.merchants.get_mut(p.merchant);
        totals.balance += u128::from(p.amount_cents);
        totals.count += 1;
        let totals = *totals;

        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(p.merchant);
        out.push(b',');
        out.extend_from_slice(p.key);
        out.push(b',');
        push_decimal(out, p.amount_cents);
        out.push(b',');
        out.extend_from_slice(p.currency);
        out.push(b',');
        push_decimal(out, totals.balance);
        out.push(b',');
        push_decimal(out, totals.count);
        emit(p.merchant, out);
        Ok(())
    }

    /// Forgets other keys whose `created_ms` is below `cutoff` (they can no
    /// longer make a record a duplicate, and `W` never decreases). Walks the
    /// arrival queue from the front and stops at the first entry still live,
    /// so the cost is amortized O(1) per accepted record.
    fn evict_other(&mut self, cutoff: i64) {
        while let Some((created_ms, _)) = self.expiry_other.front()
            && *created_ms < cutoff
        {
            if let Some((_, key)) = self.expiry_other.pop_front()
                && self.seen_other.get(&key).is_some_and(|&t| t < cutoff)
            {
                self.seen_other.remove(&key);
            }
        }
    }
}

/// `0x80` in every byte that is `0x00` in `x`, `0x00` elsewhere (exact: no
/// false positives, unlike the shorter `(x - 0x01..) & !x & 0x80..`).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

fn parse(value: &[u8]) -> Result<Payment<'_>, String> {
    // One pass, 8 bytes at a time: the comma positions, and whether any
    // byte is non-ASCII (only then is a full UTF-8 check needed).
    let mut commas = [0usize; 7];
    let mut n = 0usize;
    let mut high = 0u64;
    let (words, tail) = value.as_chunks::<8>();
    let mut scan = |w: u64, at: usize| {
        high |= w;
        let mut m = zero_bytes(w ^ COMMAS);
        while m != 0 {
            if let Some(c) = commas.get_mut(n) {
                *c = at + (m.trailing_zeros() / 8) as usize;
            }
            n += 1;
            m &= m - 1;
        }
    };
    for (i, w) in words.iter().enumerate() {
        scan(u64::from_le_bytes(*w), i * 8);
    }
    // Zero padding is neither a comma nor non-ASCII.
    scan(pack_le(tail), words.len() * 8);
    if high & HIGH_BITS != 0 && std::str::from_utf8(value).is_err() {
        return Err("record is not UTF-8".to_owned());
    }
    if n != 6 {
        return Err(format!("expected 7 comma-separated fields, got {}", n + 1));
    }
    let field = |i: usize| {
        let start = if i == 0 { 0 } else { commas[i - 1] + 1 };
        value.get(start..commas[i]).unwrap_or_default()
    };
    let (key, merchant, amount, currency, created) =
        (field(0), field(1), field(2), field(3), field(4));
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

/// The value of 8 ASCII digits packed little-endian (the first digit in the
/// lowest byte), or `None` if any byte is not a digit.
#[inline]
fn eight_digits(w: u64) -> Option<u64> {
    const NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    // High nibble 3 (0x30..=0x3f), low nibble at most 9.
    let digits = (w & !NIBBLES) == 0x3030_3030_3030_3030
        && ((w & NIBBLES) + 0x0606_0606_0606_0606) & !NIBBLES == 0;
    if !digits {
        return None;
    }
    // Pairs, then quads, then all eight (Lemire's SWAR conversion).
    let x = (w & NIBBLES).wrapping_mul(10 << 8 | 1) >> 8;
    let x = (x & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    Some((x & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32)
}

const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// One or more ASCII digits, within `u64`.
fn parse_u64(s: &[u8]) -> Result<u64, BadNumber> {
    if s.is_empty() {
        return Err(BadNumber::Syntax);
    }
    // Up to 19 digits always fit in a u64: no overflow checks (on wasm32 a
    // checked multiply is a 128-bit multiply call), 8 digits at a time.
    if s.len() <= 19 {
        let (words, tail) = s.as_chunks::<8>();
        let mut n = 0u64;
        for w in words {
            n = n * 100_000_000 + eight_digits(u64::from_le_bytes(*w)).ok_or(BadNumber::Syntax)?;
        }
        if !tail.is_empty() {
            // The tail behind leading zeros.
            let w = tail.iter().fold(0x3030_3030_3030_3030u64, |w, &b| {
                w >> 8 | u64::from(b) << 56
            });
            n = n * POW10[tail.len()] + eight_digits(w).ok_or(BadNumber::Syntax)?;
        }
        return Ok(n);
    }
    if !s.iter().all(u8::is_ascii_digit) {
        return Err(BadNumber::Syntax);
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

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A fast, deterministic hasher: a multiply-add per word (as rustc-hash)
/// and a finish that mixes the high bits down. Not resistant to
/// adversarially chosen keys, which only costs speed, never correctness.
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
        let (words, rest) = bytes.as_chunks::<8>();
        for w in words {
            self.add(u64::from_le_bytes(*w));
        }
        if !rest.is_empty() {
            self.add(pack_le(rest));
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
        // A multiply only carries upwards, so keys that differ only in
        // their high bytes (as short ids like `merchant-123`, packed
        // little-endian, do) would share their low bits, which pick the
        // bucket, and hashbrown's 7-bit tags, which come from the top bits.
        // Fold the high half down, multiply, and fold again.
        let h = self.0;
        let h = (h ^ (h >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
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
