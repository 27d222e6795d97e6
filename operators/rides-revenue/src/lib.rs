//! `rides-revenue`: trips and revenue per zone and tumbling event-time
//! window, with late rides diverted to a side output.
//!
//! Input value: one CSV line with exactly 6 fields,
//! `ride_id,zone,pickup_ms,dropoff_ms,fare_cents,tip_cents`: `zone`,
//! `fare_cents` and `tip_cents` are digits only (`zone` below 2^32, the
//! others below 2^64), `pickup_ms` and `dropoff_ms` an optional `-` then
//! digits (64-bit).
//!
//! Config: `window_minutes` (integer ≥ 1, default 60) and
//! `allowed_lateness_minutes` (integer ≥ 0, default 10).
//!
//! Per record, with `W` the largest `pickup_ms` seen so far (updated first)
//! and `window_start = pickup_ms.div_euclid(window_ms) * window_ms`:
//!
//! * a record that does not parse is rejected and changes no state;
//! * if `window_start + window_ms + lateness_ms <= W` the window is closed:
//!   the original line goes unchanged, without key, to the sink `late`;
//! * otherwise the window's totals for the zone grow by one trip and
//!   `fare_cents + tip_cents`, and the main stream gets key
//!   `{zone},{window_start}` and value
//!   `{zone},{window_start},{trips},{revenue_cents}`: the latest row per key
//!   is the truth.
//!
//! The logic is [`RidesRevenue`], usable natively; the component export is
//! behind the `component` feature.

use std::collections::BTreeMap;
use std::io::Write as _;

/// Config key for the window length in minutes.
pub const WINDOW_MINUTES: &str = "window_minutes";
/// Config key for the allowed lateness in minutes.
pub const ALLOWED_LATENESS_MINUTES: &str = "allowed_lateness_minutes";
/// Default for [`WINDOW_MINUTES`].
pub const DEFAULT_WINDOW_MINUTES: i64 = 60;
/// Default for [`ALLOWED_LATENESS_MINUTES`].
pub const DEFAULT_ALLOWED_LATENESS_MINUTES: i64 = 10;
/// The side output that receives rides of closed windows.
pub const LATE_SINK: &str = "late";

/// The `rides-revenue` operator state.
#[derive(Debug)]
pub struct RidesRevenue {
    window_ms: i64,
    lateness_ms: i64,
    /// `W`: the largest `pickup_ms` of any parsed record (`i64::MIN` before
    /// the first, which is below or equal to every value).
    watermark: i64,
    /// Totals of the open windows, by window start, then zone. Windows
    /// are evicted as soon as they close. (A `BTreeMap` rather than a
    /// `HashMap` with `RandomState`, which would make the component import
    /// `wasi:random/insecure-seed`.)
    totals: BTreeMap<(i128, u32), Totals>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    trips: u64,
    revenue_cents: i128,
}

/// The parsed fields of one ride.
struct Ride {
    zone: u32,
    pickup_ms: i64,
    fare_cents: u64,
    tip_cents: u64,
}

impl RidesRevenue {
    /// An operator with the given window length and allowed lateness in
    /// milliseconds.
    ///
    /// # Panics
    ///
    /// If `window_ms` is not positive.
    pub fn new(window_ms: i64, lateness_ms: i64) -> Self {
        assert!(window_ms > 0, "window_ms must be positive, got {window_ms}");
        RidesRevenue {
            window_ms,
            lateness_ms,
            watermark: i64::MIN,
            totals: BTreeMap::new(),
            key_buf: Vec::with_capacity(32),
            value_buf: Vec::with_capacity(64),
        }
    }

    /// Builds the operator from its config table: `window_minutes` (≥ 1,
    /// default 60) and `allowed_lateness_minutes` (≥ 0, default 10).
    /// Unknown keys are an error.
    pub fn from_config(config: &[(String, String)]) -> Result<Self, String> {
        let mut window_minutes = DEFAULT_WINDOW_MINUTES;
        let mut lateness_minutes = DEFAULT_ALLOWED_LATENESS_MINUTES;
        for (key, value) in config {
            let (slot, min) = match key.as_str() {
                WINDOW_MINUTES => (&mut window_minutes, 1),
                ALLOWED_LATENESS_MINUTES => (&mut lateness_minutes, 0),
                _ => {
                    return Err(format!(
                        "unknown config key `{key}` (known: {WINDOW_MINUTES}, \
                         {ALLOWED_LATENESS_MINUTES})"
                    ));
                }
            };
            let n: i64 = value
                .parse()
                .map_err(|e| format!("config `{key}`: invalid value '{value}' ({e})"))?;
            if n < min {
                return Err(format!(
                    "config `{key}`: invalid value '{value}' (must be at least {min})"
                ));
            }
            *slot = n;
        }
        let to_ms = |key: &str, minutes: i64| {
            minutes
                .checked_mul(60_000)
                .ok_or_else(|| format!("config `{key}`: invalid value '{minutes}' (too large)"))
        };
        Ok(Self::new(
            to_ms(WINDOW_MINUTES, window_minutes)?,
            to_ms(ALLOWED_LATENESS_MINUTES, lateness_minutes)?,
        ))
    }

    /// The window length in milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// The allowed lateness in milliseconds.
    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// Number of distinct windows held in state.
    pub fn open_windows(&self) -> usize {
        let mut n = 0;
        let mut last = None;
        for &(start, _) in self.totals.keys() {
            if last != Some(start) {
                n += 1;
                last = Some(start);
            }
        }
        n
    }

    /// Processes one record value. Calls `emit(sink, key, value)` for each
    /// output (`sink` is `""` for the main stream or [`LATE_SINK`]);
    /// `Err(reason)` rejects the record, which then changed no state.
    pub fn process(
        &mut self,
        value: &[u8],
        emit: &mut impl FnMut(&str, Option<&[u8]>, &[u8]),
    ) -> Result<(), String> {
        let ride = parse(value)?;
        self.watermark = self.watermark.max(ride.pickup_ms);
        let w = i128::from(self.watermark);
        let window_ms = i128::from(self.window_ms);
        let lateness_ms = i128::from(self.lateness_ms);
        let closes_at = |start: i128| start + window_ms + lateness_ms;

        // Closed windows never reopen (W only grows) and rides for them
        // never touch the totals, so dropping them changes no output.
        while let Some((&(start, _), _)) = self.totals.first_key_value()
            && closes_at(start) <= w
        {
            self.totals.pop_first();
        }

        let window_start = i128::from(ride.pickup_ms).div_euclid(window_ms) * window_ms;
        if closes_at(window_start) <= w {
            emit(LATE_SINK, None, value);
            return Ok(());
        }

        let totals = self.totals.entry((window_start, ride.zone)).or_default();
        totals.trips += 1;
        totals.revenue_cents += i128::from(ride.fare_cents) + i128::from(ride.tip_cents);
        let totals = *totals;

        self.key_buf.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(self.key_buf, "{},{}", ride.zone, window_start);
        self.value_buf.clear();
        self.value_buf.extend_from_slice(&self.key_buf);
        let _ = write!(self.value_buf, ",{},{}", totals.trips, totals.revenue_cents);
        emit("", Some(&self.key_buf), &self.value_buf);
        Ok(())
    }
}

fn parse(value: &[u8]) -> Result<Ride, String> {
    let line = std::str::from_utf8(value).map_err(|_| "record is not UTF-8".to_owned())?;
    let mut fields = [""; 6];
    let mut n = 0usize;
    for field in line.split(',') {
        if let Some(slot) = fields.get_mut(n) {
            *slot = field;
        }
        n += 1;
    }
    if n != 6 {
        return Err(format!("expected 6 comma-separated fields, got {n}"));
    }
    let [_ride_id, zone_text, pickup, dropoff, fare, tip] = fields;
    let zone = parse_u64("zone", zone_text)?;
    let zone = u32::try_from(zone).map_err(|_| format!("zone is out of range: '{zone_text}'"))?;
    let pickup_ms = parse_i64("pickup_ms", pickup)?;
    let _dropoff_ms = parse_i64("dropoff_ms", dropoff)?;
    let fare_cents = parse_u64("fare_cents", fare)?;
    let tip_cents = parse_u64("tip_cents", tip)?;
    Ok(Ride {
        zone,
        pickup_ms,
        fare_cents,
        tip_cents,
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// One or more ASCII digits, within `u64`.
fn parse_u64(name: &str, text: &str) -> Result<u64, String> {
    if !is_digits(text) {
        return Err(format!("{name} is not a non-negative integer: '{text}'"));
    }
    text.parse()
        .map_err(|_| format!("{name} is out of range: '{text}'"))
}

/// An optional `-` and one or more ASCII digits, within `i64`.
fn parse_i64(name: &str, text: &str) -> Result<i64, String> {
    if !is_digits(text.strip_prefix('-').unwrap_or(text)) {
        return Err(format!("{name} is not an integer: '{text}'"));
    }
    text.parse()
        .map_err(|_| format!("{name} is out of range: '{text}'"))
}

#[cfg(feature = "component")]
mod component {
    use super::RidesRevenue;
    use weir_guest::{Config, Emitter, Operator, Record, Reject};

    impl Operator for RidesRevenue {
        fn init(config: &Config) -> Result<Self, String> {
            RidesRevenue::from_config(config.as_slice())
        }

        fn process(&mut self, record: &Record, out: &mut Emitter) -> Result<(), Reject> {
            RidesRevenue::process(self, record.value(), &mut |sink, k, v| {
                out.emit_to(sink, k, v)
            })
            .map_err(Reject::from)
        }
    }

    weir_guest::export_operator!(RidesRevenue);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
