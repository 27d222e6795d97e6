//! A deterministic generator of synthetic records. Record `i` is a pure
//! function of `(profile, seed, i)`, so the generator seeks in O(1) and two
//! runs with the same seed produce the same bytes on every machine.

use serde::Deserialize;

use super::{ReadOutcome, Source, SourceError};
use crate::record::{Position, Record, SourceBatch};

/// The shape of generated records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorProfile {
    /// Payment events as CSV lines
    /// `idempotency_key,merchant,amount_cents,currency,created_ms,card,description`
    /// (about 95 bytes). About one delivery in five re-delivers an earlier
    /// payment 50 s to 8 min later, so some keys arrive 2 or 3 times.
    Payments,
    /// Taxi rides as CSV lines
    /// `ride_id,zone,pickup_ms,dropoff_ms,fare_cents,tip_cents`, in dropoff
    /// order (so pickups are out of order); about 1% arrive 1-3 hours late.
    Rides,
}

/// Generates `records` records of a profile.
pub struct GeneratorSource {
    profile: GeneratorProfile,
    seed: u64,
    records: u64,
    next: u64,
}

const BASE_MS: i64 = 1_700_000_000_000;
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "INR"];

impl GeneratorSource {
    /// A generator positioned at record 0.
    pub fn new(profile: GeneratorProfile, seed: u64, records: u64) -> GeneratorSource {
        GeneratorSource {
            profile,
            seed,
            records,
            next: 0,
        }
    }

    /// Writes the value of record `i` into `out` (cleared first).
    pub fn value_of(&self, i: u64, out: &mut Vec<u8>) {
        out.clear();
        match self.profile {
            GeneratorProfile::Payments => self.payment(i, out),
            GeneratorProfile::Rides => self.ride(i, out),
        }
    }

    fn h(&self, i: u64, salt: u64) -> u64 {
        splitmix64(self.seed ^ splitmix64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt))
    }

    /// The original payment a delivery carries: deliveries that re-deliver
    /// point back 1,000..10,000 deliveries (50 s to 8 min at 50 ms apart).
    fn original_payment(&self, mut i: u64) -> u64 {
        while self.h(i, 1) % 100 < 20 {
            let back = 1_000 + self.h(i, 2) % 9_000;
            if back > i {
                break;
            }
            i -= back;
        }
        i
    }

    fn payment(&self, i: u64, out: &mut Vec<u8>) {
        let j = self.original_payment(i);
        let merchant = self.h(j, 3) % 200;
        let amount = 100 + self.h(j, 4) % 50_000;
        let currency = CURRENCIES[(merchant % 4) as usize];
        let created = BASE_MS + j as i64 * 50 + (self.h(j, 5) % 40) as i64;
        let card = self.h(j, 6) % 10_000;
        let order = self.h(j, 7) % 10_000_000;
        // The bytes of
        // `pay-{j:012},merchant-{merchant:03},{amount},{currency},{created},card-{card:04},order-BLR-{order:07}-checkout-web-v2`,
        // written without `core::fmt`, which cost more than everything
        // else here together.
        out.extend_from_slice(b"pay-");
        push_padded(out, j, 12);
        out.extend_from_slice(b",merchant-");
        push_padded(out, merchant, 3);
        out.push(b',');
        push_padded(out, amount, 1);
        out.push(b',');
        out.extend_from_slice(currency.as_bytes());
        out.push(b',');
        push_i64(out, created);
        out.extend_from_slice(b",card-");
        push_padded(out, card, 4);
        out.extend_from_slice(b",order-BLR-");
        push_padded(out, order, 7);
        out.extend_from_slice(b"-checkout-web-v2");
    }

    fn ride(&self, i: u64, out: &mut Vec<u8>) {
        let zone = 1 + self.h(i, 1) % 263;
        let dropoff = BASE_MS + i as i64 * 1_000;
        let minutes = 2 + (self.h(i, 2) % 30) as i64;
        let mut pickup = dropoff - minutes * 60_000 - (self.h(i, 3) % 60_000) as i64;
        if self.h(i, 4).is_multiple_of(100) {
            // A device that syncs hours later: its ride lands in a window
            // that has long closed.
            pickup -= (60 + (self.h(i, 5) % 120) as i64) * 60_000;
        }
        let fare = 250 + self.h(i, 6) % 6_000;
        let tip = if self.h(i, 7).is_multiple_of(5) {
            self.h(i, 8) % 1_500
        } else {
            0
        };
        // `ride-{i:012},{zone},{pickup},{dropoff},{fare},{tip}`
        out.extend_from_slice(b"ride-");
        push_padded(out, i, 12);
        out.push(b',');
        push_padded(out, zone, 1);
        out.push(b',');
        push_i64(out, pickup);
        out.push(b',');
        push_i64(out, dropoff);
        out.push(b',');
        push_padded(out, fare, 1);
        out.push(b',');
        push_padded(out, tip, 1);
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (what
/// `format!("{n:0width$}")` writes for a `u64`).
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.resize(out.len() + width.saturating_sub(digits.len()), b'0');
    out.extend_from_slice(digits);
}

/// Appends `n` in decimal (what `format!("{n}")` writes for an `i64`).
fn push_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Sebastiano Vigna's splitmix64 finalizer: a fast, well-mixed, stable hash.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Source for GeneratorSource {
    fn describe(&self) -> String {
        format!("generator {:?} (seed {})", self.profile, self.seed).to_lowercase()
    }

    fn read(&mut self, max: usize, batch: &mut SourceBatch) -> Result<ReadOutcome, SourceError> {
        let end = self.records.min(self.next.saturating_add(max as u64));
        batch.records.reserve((end - self.next) as usize);
        batch.positions.reserve((end - self.next) as usize);
        while self.next < end {
            // Each record owns its value: one allocation per record, which
            // the line is formatted into directly.
            let mut value = Vec::with_capacity(112);
            self.value_of(self.next, &mut value);
            batch.push(Record::from_value(value), Position::Sequence(self.next));
            self.next += 1;
        }
        Ok(if self.next >= self.records {
            ReadOutcome::End
        } else {
            ReadOutcome::More
        })
    }

    fn position(&self) -> Position {
        Position::Sequence(self.next)
    }

    fn seek(&mut self, position: &Position) -> Result<(), SourceError> {
        match *position {
            Position::Sequence(i) if i <= self.records => {
                self.next = i;
                Ok(())
            }
            _ => Err(SourceError::InvalidPosition {
                source_name: self.describe(),
                position: position.clone(),
                reason: format!("positions are record #0..=#{}", self.records),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_core_fmt() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 101, 999, 1_000, 4_096, u64::MAX];
        for k in 1..20 {
            let p = 10u64.pow(k);
            values.extend([p - 1, p, p + 1, p.saturating_mul(3).saturating_add(7)]);
        }
        let mut out = Vec::new();
        for &n in &values {
            for width in [1, 3, 4, 7, 12, 20] {
                out.clear();
                push_padded(&mut out, n, width);
                assert_eq!(out, format!("{n:0width$}").as_bytes(), "{n} width {width}");
            }
            let i = n as i64;
            for m in [i, i.wrapping_neg(), i64::MIN, i64::MAX] {
                out.clear();
                push_i64(&mut out, m);
                assert_eq!(out, format!("{m}").as_bytes());
            }
        }
    }

    #[test]
    fn records_are_the_documented_csv() {
        for profile in [GeneratorProfile::Payments, GeneratorProfile::Rides] {
            let g = GeneratorSource::new(profile, 3, 0);
            let mut out = Vec::new();
            for i in (0..5_000).chain([123_456_789_012, 999_999_999_999, 10u64.pow(13)]) {
                g.value_of(i, &mut out);
                let line = std::str::from_utf8(&out).expect("generated records are ASCII");
                let fields = line.split(',').count();
                assert_eq!(
                    fields,
                    if profile == GeneratorProfile::Payments {
                        7
                    } else {
                        6
                    }
                );
                assert!(
                    line.starts_with(&format!(
                        "{}-{i:012},",
                        if profile == GeneratorProfile::Payments {
                            "pay"
                        } else {
                            "ride"
                        }
                    )) || profile == GeneratorProfile::Payments
                );
            }
        }
    }
}
