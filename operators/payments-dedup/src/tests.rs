use super::*;

/// Runs `lines` through `op`; returns one entry per line: `Ok(outputs)` or
/// `Err(reason)`.
fn run(op: &mut PaymentsDedup, lines: &[&str]) -> Vec<Result<Vec<(String, String)>, String>> {
    lines
        .iter()
        .map(|line| {
            let mut outs = Vec::new();
            op.process(line.as_bytes(), &mut |k, v| {
                outs.push((
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
            })
            .map(|()| outs)
        })
        .collect()
}

fn one(op: &mut PaymentsDedup, line: &str) -> Result<Vec<(String, String)>, String> {
    run(op, &[line]).pop().unwrap()
}

fn out(k: &str, v: &str) -> Result<Vec<(String, String)>, String> {
    Ok(vec![(k.to_owned(), v.to_owned())])
}

const MIN: i64 = 60_000;

#[test]
fn output_format_and_running_totals() {
    let mut op = PaymentsDedup::new(60 * MIN);
    let got = run(
        &mut op,
        &[
            "pay-000000001234,merchant-017,1234,EUR,1700000123456,card-4821,order-0001234-x",
            "pay-000000001235,merchant-017,0766,EUR,1700000123457,card-4821,order-0001235-x",
            "pay-000000001236,merchant-002,5,USD,1700000123458,card-1,d",
        ],
    );
    assert_eq!(
        got,
        vec![
            out(
                "merchant-017",
                "merchant-017,pay-000000001234,1234,EUR,1234,1"
            ),
            out(
                "merchant-017",
                "merchant-017,pay-000000001235,766,EUR,2000,2"
            ),
            out("merchant-002", "merchant-002,pay-000000001236,5,USD,5,1"),
        ]
    );
}

#[test]
fn rejection_messages() {
    let mut op = PaymentsDedup::new(60 * MIN);
    let cases: &[(&[u8], &str)] = &[
        (b"", "expected 7 comma-separated fields, got 1"),
        (b"a,b,1,EUR,5,c", "expected 7 comma-separated fields, got 6"),
        (
            b"a,b,1,EUR,5,c,d,e",
            "expected 7 comma-separated fields, got 8",
        ),
        (b",,,,,,,,,", "expected 7 comma-separated fields, got 10"),
        (
            b"a,b,-1,EUR,5,c,d",
            "amount_cents is not a non-negative integer: '-1'",
        ),
        (
            b"a,b,,EUR,5,c,d",
            "amount_cents is not a non-negative integer: ''",
        ),
        (
            b"a,b,1.5,EUR,5,c,d",
            "amount_cents is not a non-negative integer: '1.5'",
        ),
        (
            b"a,b,+1,EUR,5,c,d",
            "amount_cents is not a non-negative integer: '+1'",
        ),
        (
            b"a,b,99999999999999999999,EUR,5,c,d",
            "amount_cents is out of range: '99999999999999999999'",
        ),
        // amount is checked before created_ms.
        (
            b"a,b,x,EUR,y,c,d",
            "amount_cents is not a non-negative integer: 'x'",
        ),
        (b"a,b,1,EUR,,c,d", "created_ms is not an integer: ''"),
        (
            b"a,b,1,EUR,17e9,c,d",
            "created_ms is not an integer: '17e9'",
        ),
        (b"a,b,1,EUR,-,c,d", "created_ms is not an integer: '-'"),
        (
            b"a,b,1,EUR,9223372036854775808,c,d",
            "created_ms is out of range: '9223372036854775808'",
        ),
        (
            b"a,b,1,EUR,-9223372036854775809,c,d",
            "created_ms is out of range: '-9223372036854775809'",
        ),
        (b"a,b,1,EUR,1 ,c,d", "created_ms is not an integer: '1 '"),
        (
            "a,b,\u{661},EUR,1,c,d".as_bytes(),
            "amount_cents is not a non-negative integer: '\u{661}'",
        ),
        (b"a,b,1,EUR,1 ,c,d", "created_ms is not an integer: '1 '"),
        (b"a,b,1,EUR,+5,c,d", "created_ms is not an integer: '+5'"),
        (
            "a,b,\u{661},EUR,1,c,d".as_bytes(),
            "amount_cents is not a non-negative integer: '\u{661}'",
        ),
        (b"a,b\xff,1,EUR,5,c,d", "record is not UTF-8"),
        // UTF-8 is checked before the field count.
        (b"\xc3", "record is not UTF-8"),
    ];
    for (line, reason) in cases {
        let r = op.process(line, &mut |_, _| panic!("rejected record emitted"));
        assert_eq!(
            r,
            Err((*reason).to_owned()),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(op.remembered_keys(), 0);
    assert!(op.merchants.is_empty());
    assert_eq!(op.watermark, i64::MIN);
}

#[test]
fn extreme_created_ms_parse() {
    let mut op = PaymentsDedup::new(0);
    assert_eq!(
        one(&mut op, "k1,m,1,EUR,-9223372036854775808,c,d"),
        out("m", "m,k1,1,EUR,1,1")
    );
    assert_eq!(
        one(&mut op, "k2,m,1,EUR,9223372036854775807,c,d"),
        out("m", "m,k2,1,EUR,2,2")
    );
    // k1 is far below W - ttl: accepted again.
    assert_eq!(
        one(&mut op, "k1,m,1,EUR,-9223372036854775808,c,d"),
        out("m", "m,k1,1,EUR,3,3")
    );
    // k2 == W: duplicate even with ttl 0.
    assert_eq!(one(&mut op, "k2,m,1,EUR,0,c,d"), Ok(vec![]));
}

#[test]
fn rejected_record_changes_no_state() {
    let mut op = PaymentsDedup::new(MIN);
    assert!(one(&mut op, "pay-000000000001,m,10,EUR,1000,c,d").is_ok());
    // Bad amount with a huge created_ms: must not advance W.
    assert!(one(&mut op, "pay-000000000002,m,x,EUR,999999999,c,d").is_err());
    // Bad created_ms for a known key.
    assert!(one(&mut op, "pay-000000000001,m,10,EUR,x,c,d").is_err());
    // Still a duplicate (W is still 1000) and the totals did not move.
    assert_eq!(
        one(&mut op, "pay-000000000001,m,10,EUR,1000,c,d"),
        Ok(vec![])
    );
    assert_eq!(
        one(&mut op, "pay-000000000003,m,1,EUR,1000,c,d"),
        out("m", "m,pay-000000000003,1,EUR,11,2")
    );
}

#[test]
fn ttl_boundary_is_inclusive() {
    let ttl = 10 * MIN;
    let mut op = PaymentsDedup::new(ttl);
    let t0 = 1_700_000_000_000i64;
    let line = |key: &str, t: i64| format!("{key},m,1,EUR,{t},c,d");
    assert!(!one(&mut op, &line("k", t0)).unwrap().is_empty());
    // Another key moves W to exactly t0 + ttl: seen[k] == W - ttl.
    assert!(!one(&mut op, &line("other", t0 + ttl)).unwrap().is_empty());
    assert_eq!(one(&mut op, &line("k", t0 - 5)), Ok(vec![]));
    // One more millisecond: k has expired, the late record is accepted and
    // remembers its own (older) created_ms.
    assert!(
        !one(&mut op, &line("other2", t0 + ttl + 1))
            .unwrap()
            .is_empty()
    );
    assert_eq!(one(&mut op, &line("k", t0 - 5)), out("m", "m,k,1,EUR,4,4"));
    // The duplicate check uses W, which the record itself raises first.
    assert!(!one(&mut op, &line("j", t0 + ttl + 1)).unwrap().is_empty());
    assert_eq!(one(&mut op, &line("j", t0 + 2 * ttl + 1)), Ok(vec![]));
    assert!(
        !one(&mut op, &line("j", t0 + 2 * ttl + 2))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn compact_and_other_keys_never_collide() {
    assert_eq!(compact_key(b"pay-000000001234"), Some(1234));
    assert_eq!(compact_key(b"pay-999999999999"), Some(999_999_999_999));
    assert_eq!(compact_key(b"pay-00000000123"), None);
    assert_eq!(compact_key(b"pay-0000000012345"), None);
    assert_eq!(compact_key(b"pay-00000000123x"), None);
    assert_eq!(compact_key(b"PAY-000000001234"), None);
    let mut op = PaymentsDedup::new(60 * MIN);
    for key in [
        "pay-000000001234",
        "pay-1234",
        "pay-0000000001234",
        "pay-00000000123 ",
        "",
        "ключ",
    ] {
        let got = one(&mut op, &format!("{key},m,1,EUR,5,c,d")).unwrap();
        assert_eq!(got.len(), 1, "{key:?}");
        assert_eq!(one(&mut op, &format!("{key},m,1,EUR,5,c,d")), Ok(vec![]));
    }
}

#[test]
fn from_config() {
    assert_eq!(PaymentsDedup::from_config(&[]).unwrap().ttl_ms(), 60 * MIN);
    let cfg = |v: &str| vec![("ttl_minutes".to_owned(), v.to_owned())];
    assert_eq!(
        PaymentsDedup::from_config(&cfg("5")).unwrap().ttl_ms(),
        5 * MIN
    );
    assert_eq!(PaymentsDedup::from_config(&cfg("0")).unwrap().ttl_ms(), 0);
    assert_eq!(
        PaymentsDedup::from_config(&cfg("ten")).unwrap_err(),
        "config `ttl_minutes`: invalid value 'ten' (invalid digit found in string)"
    );
    assert!(
        PaymentsDedup::from_config(&cfg("-1"))
            .unwrap_err()
            .contains("must not be negative")
    );
    assert!(
        PaymentsDedup::from_config(&cfg("9223372036854775807"))
            .unwrap_err()
            .contains("too large")
    );
    let err = PaymentsDedup::from_config(&[("ttl".to_owned(), "5".to_owned())]).unwrap_err();
    assert!(err.contains("unknown config key `ttl`"), "{err}");
}

/// A direct transcription of the rules, with no eviction and no tricks.
struct Reference {
    ttl_ms: i128,
    w: Option<i128>,
    seen: HashMap<String, i128>,
    balance: HashMap<String, u128>,
    count: HashMap<String, u64>,
}

impl Reference {
    fn process(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 7 {
            return Err(format!(
                "expected 7 comma-separated fields, got {}",
                f.len()
            ));
        }
        let amount: u64 = if !f[2].is_empty() && f[2].bytes().all(|b| b.is_ascii_digit()) {
            f[2].parse().map_err(|_| "overflow".to_owned())?
        } else {
            return Err(format!(
                "amount_cents is not a non-negative integer: '{}'",
                f[2]
            ));
        };
        let created: i64 = f[4]
            .parse()
            .map_err(|_| format!("created_ms is not an integer: '{}'", f[4]))?;
        let created = i128::from(created);
        let w = self.w.map_or(created, |w| w.max(created));
        self.w = Some(w);
        if self.seen.get(f[0]).is_some_and(|&s| s >= w - self.ttl_ms) {
            return Ok(None);
        }
        self.seen.insert(f[0].to_owned(), created);
        let b = self.balance.entry(f[1].to_owned()).or_default();
        *b += u128::from(amount);
        let c = self.count.entry(f[1].to_owned()).or_default();
        *c += 1;
        Ok(Some((
            f[1].to_owned(),
            format!("{},{},{},{},{},{}", f[1], f[0], amount, f[3], b, c),
        )))
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random streams with repeated keys, out-of-order and late timestamps and
/// a few bad lines: the operator (which evicts) must match the reference
/// (which never forgets) exactly, and must actually have evicted.
#[test]
fn matches_reference_and_eviction_never_changes_outputs() {
    for (seed, ttl_ms) in [(1u64, 0i64), (2, 1_000), (3, 30_000), (4, 600_000)] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut op = PaymentsDedup::new(ttl_ms);
        let mut reference = Reference {
            ttl_ms: i128::from(ttl_ms),
            w: None,
            seen: HashMap::new(),
            balance: HashMap::new(),
            count: HashMap::new(),
        };
        let mut clock = 1_700_000_000_000i64;
        for i in 0..40_000u64 {
            clock += rng.below(50) as i64;
            let created = match rng.below(100) {
                0 => clock - 2_000_000,                    // very late
                1..=20 => clock - rng.below(5_000) as i64, // out of order
                _ => clock,
            };
            let key = match rng.below(10) {
                0 => format!("k{}", rng.below(300)),
                _ => format!("pay-{:012}", rng.below(2_000)),
            };
            let merchant = format!("merchant-{:03}", rng.below(20));
            let line = match rng.below(200) {
                0 => format!("{key},{merchant},oops,EUR,{created},c,d"),
                1 => format!("{key},{merchant},5,EUR,{created}"),
                2 => format!("{key},{merchant},5,EUR,t{created},c,d"),
                _ => format!(
                    "{key},{merchant},{},EUR,{created},card-{},order-{i}",
                    rng.below(100_000),
                    rng.below(10_000)
                ),
            };
            let want = reference.process(&line);
            let mut got = Vec::new();
            let r = op.process(line.as_bytes(), &mut |k, v| {
                got.push((
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
            });
            match want {
                Err(reason) => assert_eq!(r, Err(reason), "line {i}: {line}"),
                Ok(want) => {
                    assert_eq!(r, Ok(()), "line {i}: {line}");
                    assert_eq!(
                        got,
                        want.into_iter().collect::<Vec<_>>(),
                        "line {i}: {line}"
                    );
                }
            }
        }
        assert!(
            op.remembered_keys() < reference.seen.len(),
            "ttl {ttl_ms}: nothing was evicted ({} keys)",
            op.remembered_keys()
        );
    }
}

/// Hand-computed cases of `examples/test_oracles.py`, ported.
#[test]
fn oracle_cases() {
    fn pay(key: &str, merchant: &str, amount: u64, created: i64) -> String {
        format!("{key},{merchant},{amount},EUR,{created},card-0001,order-{key}-x")
    }
    fn run_ttl(ttl_minutes: i64, lines: &[String]) -> Vec<String> {
        let mut op = PaymentsDedup::new(ttl_minutes * MIN);
        let mut out = Vec::new();
        for line in lines {
            op.process(line.as_bytes(), &mut |_, v| {
                out.push(String::from_utf8(v.to_vec()).unwrap());
            })
            .unwrap();
        }
        out
    }
    const HOUR: i64 = 60 * MIN;
    let p1 = pay("pay-1", "m-A", 100, 0);
    let lines = [
        p1.clone(),
        pay("pay-9", "m-B", 7, HOUR),
        p1.clone(),
        pay("pay-8", "m-B", 3, HOUR + 1),
        p1.clone(),
        p1.clone(),
    ];
    assert_eq!(
        run_ttl(60, &lines),
        [
            "m-A,pay-1,100,EUR,100,1",
            "m-B,pay-9,7,EUR,7,1",
            "m-B,pay-8,3,EUR,10,2",
            "m-A,pay-1,100,EUR,200,2",
            "m-A,pay-1,100,EUR,300,3",
        ]
    );
    let lines = [
        pay("pay-1", "m-A", 10, 0),
        pay("pay-1", "m-A", 10, HOUR + 1),
        pay("pay-1", "m-A", 10, 0),
    ];
    assert_eq!(
        run_ttl(60, &lines),
        ["m-A,pay-1,10,EUR,10,1", "m-A,pay-1,10,EUR,20,2"]
    );
    let lines = [
        pay("k1", "merchant-001", 1000, 10),
        pay("k2", "merchant-002", 1, 20),
        pay("k3", "merchant-001", 234, 30),
        pay("k1", "merchant-001", 1000, 10),
        pay("k4", "merchant-003", 0, 40),
        pay("k5", "merchant-002", 99, 50),
        pay("k6", "merchant-001", 5, 25),
    ];
    assert_eq!(
        run_ttl(60, &lines),
        [
            "merchant-001,k1,1000,EUR,1000,1",
            "merchant-002,k2,1,EUR,1,1",
            "merchant-001,k3,234,EUR,1234,2",
            "merchant-003,k4,0,EUR,0,1",
            "merchant-002,k5,99,EUR,100,2",
            "merchant-001,k6,5,EUR,1239,3",
        ]
    );
    let lines = [
        pay("a", "m", 1, 100),
        pay("a", "m", 1, 100),
        pay("b", "m", 1, 101),
        pay("a", "m", 1, 100),
    ];
    assert_eq!(
        run_ttl(0, &lines),
        ["m,a,1,EUR,1,1", "m,b,1,EUR,2,2", "m,a,1,EUR,3,3"]
    );
    let u = "pay-x,m-\u{dc},5,EUR,-5,card-1,caf\u{e9} \u{2615}".to_owned();
    assert_eq!(run_ttl(60, &[u.clone(), u]), ["m-\u{dc},pay-x,5,EUR,5,1"]);
}

/// The word-at-a-time number parser agrees with `str::parse` (restricted to
/// plain digits) on every length and on every byte that is almost a digit.
#[test]
fn number_parsing_matches_std() {
    let reference = |s: &[u8]| -> Result<u64, bool> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return Err(true);
        }
        std::str::from_utf8(s)
            .unwrap()
            .parse::<u64>()
            .map_err(|_| false)
    };
    let got = |s: &[u8]| match parse_u64(s) {
        Ok(n) => Ok(n),
        Err(BadNumber::Syntax) => Err(true),
        Err(BadNumber::Range) => Err(false),
    };
    let mut rng = Rng(7);
    for len in 0..=22usize {
        for _ in 0..300 {
            let mut s: Vec<u8> = (0..len).map(|_| b'0' + rng.below(10) as u8).collect();
            assert_eq!(got(&s), reference(&s), "{}", String::from_utf8_lossy(&s));
            if len > 0 {
                let i = rng.below(len as u64) as usize;
                for bad in [b'/', b':', b' ', 0, 0x80 | b'5', 0xb0, b'a', b'-', 0x3f] {
                    s[i] = bad;
                    assert_eq!(got(&s), reference(&s), "{:?}", s);
                }
            }
        }
    }
    for s in [
        "18446744073709551615",
        "18446744073709551616",
        "9999999999999999999",
    ] {
        assert_eq!(got(s.as_bytes()), reference(s.as_bytes()), "{s}");
    }
    assert_eq!(compact_key(b"pay-12345678901:"), None);
    assert_eq!(compact_key(b"pay-1234567/9012"), None);
    assert_eq!(compact_key(b"pay-123456789012"), Some(123_456_789_012));
}

#[test]
fn short_keys_are_one_to_one() {
    let mut seen = HashMap::new();
    let names: Vec<Vec<u8>> = (0..=17usize)
        .flat_map(|len| {
            [vec![b'a'; len], vec![0u8; len], {
                let mut v = vec![b'a'; len];
                if let Some(b) = v.last_mut() {
                    *b = 0;
                }
                v
            }]
        })
        .collect();
    for name in &names {
        match ShortKey::new(name) {
            Some(k) => {
                assert!(name.len() <= 16);
                if let Some(other) = seen.insert(k, name.clone()) {
                    assert_eq!(&other, name, "collision");
                }
            }
            None => assert!(name.len() > 16),
        }
    }
    // Long and short merchants both keep their own totals.
    let mut op = PaymentsDedup::new(60 * MIN);
    let long = "merchant-with-a-rather-long-id";
    for (i, m) in ["m", long, "m", long, "m\0"].iter().enumerate() {
        let got = one(&mut op, &format!("k{i},{m},1,EUR,5,c,d")).unwrap();
        assert!(
            got[0].1.ends_with(match i {
                0 | 1 | 4 => ",1,1",
                _ => ",2,2",
            }),
            "{got:?}"
        );
    }
}

/// Ids that differ only in their last bytes must still spread over the
/// low bits (the bucket) and the top 7 bits (hashbrown's tag).
#[test]
fn hash_spreads_short_ids() {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    let hashes: Vec<u64> = (0..200)
        .map(|i| {
            FastBuild::default().hash_one(ShortKey::new(format!("merchant-{i:03}").as_bytes()))
        })
        .collect();
    let low: HashSet<u64> = hashes.iter().map(|h| h & 255).collect();
    let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
    assert!(low.len() > 100, "{} distinct low bytes", low.len());
    assert!(tags.len() > 64, "{} distinct tags", tags.len());
}
