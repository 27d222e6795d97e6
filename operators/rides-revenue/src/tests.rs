use super::*;
use std::collections::HashMap;

type Out = (String, Option<String>, String);

fn one(op: &mut RidesRevenue, line: &str) -> Result<Vec<Out>, String> {
    let mut outs = Vec::new();
    op.process(line.as_bytes(), &mut |sink, k, v| {
        outs.push((
            sink.to_owned(),
            k.map(|k| String::from_utf8(k.to_vec()).unwrap()),
            String::from_utf8(v.to_vec()).unwrap(),
        ));
    })
    .map(|()| outs)
}

fn main_out(key: &str, value: &str) -> Result<Vec<Out>, String> {
    Ok(vec![(
        String::new(),
        Some(key.to_owned()),
        value.to_owned(),
    )])
}

fn late(line: &str) -> Result<Vec<Out>, String> {
    Ok(vec![("late".to_owned(), None, line.to_owned())])
}

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

#[test]
fn output_format_and_replacement_rows() {
    let mut op = RidesRevenue::new(HOUR, 10 * MIN);
    let t = 1_700_000_000_000i64; // window start 1699999200000
    let ws = t.div_euclid(HOUR) * HOUR;
    assert_eq!(ws, 1_699_999_200_000);
    assert_eq!(
        one(&mut op, &format!("r1,42,{t},{},1500,200", t + 600_000)),
        main_out(&format!("42,{ws}"), &format!("42,{ws},1,1700"))
    );
    assert_eq!(
        one(&mut op, &format!("r2,42,{},{},100,0", t + 5, t + 9)),
        main_out(&format!("42,{ws}"), &format!("42,{ws},2,1800"))
    );
    assert_eq!(
        one(&mut op, &format!("r3,7,{},{},1,2", t + 5, t + 9)),
        main_out(&format!("7,{ws}"), &format!("7,{ws},1,3"))
    );
}

#[test]
fn negative_pickup_uses_floor_windows() {
    let mut op = RidesRevenue::new(HOUR, 0);
    assert_eq!(
        one(&mut op, "r,0,-1,0,5,5"),
        main_out("0,-3600000", "0,-3600000,1,10")
    );
    assert_eq!(
        one(&mut op, "r,0,-3600000,0,1,0"),
        main_out("0,-3600000", "0,-3600000,2,11")
    );
}

#[test]
fn late_rides_go_to_the_late_sink_unchanged() {
    let mut op = RidesRevenue::new(HOUR, 10 * MIN);
    // Window [0, 1h) closes once W reaches 1h10m.
    assert!(one(&mut op, "a,1,1000,2000,10,0").is_ok());
    assert_eq!(
        one(&mut op, &format!("b,1,{},0,1,1", HOUR + 10 * MIN - 1)),
        main_out("1,3600000", "1,3600000,1,2")
    );
    // Still open: W = 1h10m - 1ms.
    assert_eq!(one(&mut op, "c,1,5,0,10,0"), main_out("1,0", "1,0,2,20"));
    // This record itself moves W to 1h10m, closing [0, 1h) first.
    let line = format!("d,1,{},0,3,0", HOUR + 10 * MIN);
    assert_eq!(one(&mut op, &line), main_out("1,3600000", "1,3600000,2,5"));
    assert_eq!(one(&mut op, "e,1,5,0,10,0"), late("e,1,5,0,10,0"));
    // A record that is late for its own window when W jumps past it.
    let jump = format!("f,2,{},0,0,0", 100 * HOUR);
    assert!(one(&mut op, &jump).is_ok());
    assert_eq!(
        one(&mut op, &format!("g,1,{},x,y,z", HOUR)).unwrap_err(),
        "dropoff_ms is not an integer: 'x'"
    );
    let odd = format!("g, {} ,{},0,0,0", 1, 98 * HOUR);
    assert_eq!(
        one(&mut op, &odd).unwrap_err(),
        "zone is not a non-negative integer: ' 1 '"
    );
    let g = format!("g,3,{},0,0,0", 98 * HOUR + 59 * MIN);
    assert_eq!(one(&mut op, &g), late(&g));
    assert_eq!(op.open_windows(), 1);
}

#[test]
fn rejection_messages() {
    let mut op = RidesRevenue::new(HOUR, 10 * MIN);
    let cases: &[(&[u8], &str)] = &[
        (b"", "expected 6 comma-separated fields, got 1"),
        (b"r,1,2,3,4", "expected 6 comma-separated fields, got 5"),
        (b"r,1,2,3,4,5,6", "expected 6 comma-separated fields, got 7"),
        (b"r,x,2,3,4,5", "zone is not a non-negative integer: 'x'"),
        (b"r,,2,3,4,5", "zone is not a non-negative integer: ''"),
        (b"r,-1,2,3,4,5", "zone is not a non-negative integer: '-1'"),
        (
            b"r,4294967296,2,3,4,5",
            "zone is out of range: '4294967296'",
        ),
        (b"r,1,2.5,3,4,5", "pickup_ms is not an integer: '2.5'"),
        (b"r,1,+2,3,4,5", "pickup_ms is not an integer: '+2'"),
        (
            b"r,1,9223372036854775808,3,4,5",
            "pickup_ms is out of range: '9223372036854775808'",
        ),
        (b"r,1,2,three,4,5", "dropoff_ms is not an integer: 'three'"),
        (
            b"r,1,2,3,4$,5",
            "fare_cents is not a non-negative integer: '4$'",
        ),
        (
            b"r,1,2,3,-4,5",
            "fare_cents is not a non-negative integer: '-4'",
        ),
        (b"r,1,2,3,4,", "tip_cents is not a non-negative integer: ''"),
        (
            b"r,1,2,3,4,-5",
            "tip_cents is not a non-negative integer: '-5'",
        ),
        (
            b"r,1,2,3,+4,5",
            "fare_cents is not a non-negative integer: '+4'",
        ),
        (
            b"r,1,2,3,18446744073709551616,5",
            "fare_cents is out of range: '18446744073709551616'",
        ),
        (
            b"r,1,2,3,4,1\r",
            "tip_cents is not a non-negative integer: '1\r'",
        ),
        (b"r,1,2,3,4,5\xff", "record is not UTF-8"),
    ];
    for (line, reason) in cases {
        let r = op.process(line, &mut |_, _, _| panic!("rejected record emitted"));
        assert_eq!(
            r,
            Err((*reason).to_owned()),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(op.watermark, i64::MIN);
    assert_eq!(op.open_windows(), 0);
}

#[test]
fn extreme_values_do_not_overflow() {
    let mut op = RidesRevenue::new(HOUR, 10 * MIN);
    let min = i64::MIN;
    let ws = i128::from(min).div_euclid(i128::from(HOUR)) * i128::from(HOUR);
    assert_eq!(
        one(
            &mut op,
            &format!("r,4294967295,{min},0,{},{}", u64::MAX, u64::MAX)
        ),
        main_out(
            &format!("4294967295,{ws}"),
            &format!("4294967295,{ws},1,{}", 2 * i128::from(u64::MAX))
        )
    );
    let max = i64::MAX;
    assert!(one(&mut op, &format!("r,0,{max},0,0,0")).is_ok());
    let line = format!("r,0,{min},0,0,0");
    assert_eq!(one(&mut op, &line), late(&line));
}

#[test]
fn from_config() {
    let op = RidesRevenue::from_config(&[]).unwrap();
    assert_eq!((op.window_ms(), op.lateness_ms()), (HOUR, 10 * MIN));
    let cfg = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    let op = RidesRevenue::from_config(&cfg(&[
        ("allowed_lateness_minutes", "0"),
        ("window_minutes", "15"),
    ]))
    .unwrap();
    assert_eq!((op.window_ms(), op.lateness_ms()), (15 * MIN, 0));
    assert_eq!(
        RidesRevenue::from_config(&cfg(&[("window_minutes", "0")])).unwrap_err(),
        "config `window_minutes`: invalid value '0' (must be at least 1)"
    );
    assert_eq!(
        RidesRevenue::from_config(&cfg(&[("allowed_lateness_minutes", "-1")])).unwrap_err(),
        "config `allowed_lateness_minutes`: invalid value '-1' (must be at least 0)"
    );
    assert_eq!(
        RidesRevenue::from_config(&cfg(&[("window_minutes", "x")])).unwrap_err(),
        "config `window_minutes`: invalid value 'x' (invalid digit found in string)"
    );
    assert!(
        RidesRevenue::from_config(&cfg(&[("window", "5")]))
            .unwrap_err()
            .contains("unknown config key `window`")
    );
}

/// A direct transcription of the rules that never evicts anything.
struct Reference {
    window_ms: i128,
    lateness_ms: i128,
    w: Option<i128>,
    totals: HashMap<(u32, i128), (u64, i128)>,
}

impl Reference {
    fn process(&mut self, line: &str) -> Option<Out> {
        let f: Vec<&str> = line.split(',').collect();
        let zone: u32 = f[1].parse().ok()?;
        let pickup = i128::from(f[2].parse::<i64>().ok()?);
        let fare = i128::from(f[4].parse::<i64>().ok()?);
        let tip = i128::from(f[5].parse::<i64>().ok()?);
        let w = self.w.map_or(pickup, |w| w.max(pickup));
        self.w = Some(w);
        let ws = pickup.div_euclid(self.window_ms) * self.window_ms;
        if ws + self.window_ms + self.lateness_ms <= w {
            return Some(("late".to_owned(), None, line.to_owned()));
        }
        let t = self.totals.entry((zone, ws)).or_default();
        t.0 += 1;
        t.1 += fare + tip;
        Some((
            String::new(),
            Some(format!("{zone},{ws}")),
            format!("{zone},{ws},{},{}", t.0, t.1),
        ))
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn matches_reference_and_eviction_never_changes_outputs() {
    for (seed, window_ms, lateness_ms) in [(1u64, MIN, 0), (2, 5 * MIN, MIN), (3, HOUR, 10 * MIN)] {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        let mut op = RidesRevenue::new(window_ms, lateness_ms);
        let mut reference = Reference {
            window_ms: i128::from(window_ms),
            lateness_ms: i128::from(lateness_ms),
            w: None,
            totals: HashMap::new(),
        };
        let mut clock = 1_700_000_000_000i64;
        let mut max_open = 0;
        for i in 0..30_000 {
            clock += rng.below(400) as i64;
            let pickup = match rng.below(100) {
                0 => clock - 3 * window_ms - lateness_ms,
                1..=30 => clock - rng.below(window_ms as u64 + lateness_ms as u64) as i64,
                _ => clock,
            };
            let line = format!(
                "ride-{i},{},{pickup},{},{},{}",
                rng.below(30),
                pickup + 600_000,
                rng.below(5_000),
                rng.below(500)
            );
            let want = reference.process(&line).unwrap();
            assert_eq!(one(&mut op, &line), Ok(vec![want]), "line {i}: {line}");
            max_open = max_open.max(op.open_windows());
        }
        let all_windows: std::collections::HashSet<i128> =
            reference.totals.keys().map(|&(_, ws)| ws).collect();
        assert!(
            op.open_windows() < all_windows.len(),
            "nothing was evicted ({} windows)",
            op.open_windows()
        );
        assert!(max_open <= 3 + (lateness_ms / window_ms) as usize);
    }
}

/// Hand-computed cases of `examples/test_oracles.py`, ported.
#[test]
fn oracle_cases() {
    fn ride(rid: &str, zone: u32, pickup: i64, fare: u64, tip: u64) -> String {
        format!("{rid},{zone},{pickup},{},{fare},{tip}", pickup + 15 * MIN)
    }
    fn run(window: i64, lateness: i64, lines: &[String]) -> (Vec<String>, Vec<String>) {
        let mut op = RidesRevenue::new(window * MIN, lateness * MIN);
        let (mut main, mut late) = (Vec::new(), Vec::new());
        for line in lines {
            for (sink, _, v) in one(&mut op, line).unwrap() {
                if sink.is_empty() {
                    main.push(v)
                } else {
                    late.push(v)
                }
            }
        }
        (main, late)
    }
    let lines = [
        ride("r1", 1, 0, 1000, 200),
        ride("r2", 2, 1_800_000, 500, 0),
        ride("r3", 1, 3_000_000, 700, 100),
        ride("r4", 1, 4_000_000, 300, 0),
        ride("r5", 2, 3_599_999, 40, 2),
        ride("r6", 3, 4_199_999, 10, 0),
        ride("r7", 1, 100, 5, 5),
        ride("r8", 1, 4_200_000, 1, 1),
        ride("r9", 2, 0, 111, 0),
    ];
    let (main, late) = run(60, 10, &lines);
    assert_eq!(
        main,
        [
            "1,0,1,1200",
            "2,0,1,500",
            "1,0,2,2000",
            "1,3600000,1,300",
            "2,0,2,542",
            "3,3600000,1,10",
            "1,0,3,2010",
            "1,3600000,2,302",
        ]
    );
    assert_eq!(late, [lines[8].clone()]);

    let odd = "r-\u{e9},7,60000,-1,0100,0".to_owned();
    let lines = [
        ride("a", 7, 3 * HOUR, 1, 0),
        odd.clone(),
        ride("b", 7, 3 * HOUR + 1, 2, 0),
    ];
    let (main, late) = run(60, 10, &lines);
    assert_eq!(main, ["7,10800000,1,1", "7,10800000,2,3"]);
    assert_eq!(late, [odd]);

    let lines = [
        ride("n3", 5, -HOUR - 1, 30, 0),
        ride("n1", 5, -1, 10, 0),
        ride("n2", 5, -HOUR, 20, 0),
        ride("n4", 0, 0, 1, 0),
        ride("n5", 5, -HOUR - 2, 4, 0),
        ride("n6", 5, -5, 1, 1),
    ];
    let (main, late) = run(60, 10, &lines);
    assert_eq!(
        main,
        [
            "5,-7200000,1,30",
            "5,-3600000,1,10",
            "5,-3600000,2,30",
            "0,0,1,1",
            "5,-3600000,3,32",
        ]
    );
    assert_eq!(late, [lines[4].clone()]);

    let lines = [
        ride("a", 1, 0, 1, 0),
        ride("b", 1, 15 * MIN, 1, 0),
        ride("c", 1, 14 * MIN, 1, 0),
    ];
    let (main, late) = run(15, 0, &lines);
    assert_eq!(main, ["1,0,1,1", "1,900000,1,1"]);
    assert_eq!(late, [lines[2].clone()]);
}
