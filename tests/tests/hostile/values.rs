//! Hostile values: edges of every range, odd characters, huge strings.
//!
//! Deterministic per seed. A run draws its seed from `RPOOL_FUZZ_SEED` (to
//! replay a failure) or from the clock, and prints it; it runs each property
//! for `RPOOL_FUZZ_SECS` seconds (default 2) or `RPOOL_FUZZ_CASES` cases
//! (default 20000), whichever ends first, so CI time stays bounded.

use std::time::{Duration, Instant};

/// Seeded generator of hostile values.
pub struct Gen {
    pub rng: fastrand::Rng,
}

/// Characters that break naive parsers, terminals and logs.
const NASTY: &[char] = &[
    '\0',
    '\n',
    '\r',
    '\t',
    '"',
    '\'',
    '\\',
    '/',
    '.',
    '-',
    '_',
    ':',
    ';',
    '=',
    '[',
    ']',
    '{',
    '}',
    '#',
    '$',
    '%',
    '*',
    ' ',
    '\u{7f}',
    '\u{85}',
    '\u{200b}',
    '\u{202e}',
    '\u{fe0f}',
    '\u{feff}',
    'é',
    'ß',
    'İ',
    '😀',
    '\u{10ffff}',
    'A',
    'z',
    '0',
    '9',
];

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn bool(&mut self) -> bool {
        self.rng.bool()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    /// A length near one of the interesting limits.
    pub fn len(&mut self) -> usize {
        let limits = [
            0usize, 1, 2, 4, 35, 36, 37, 40, 41, 63, 64, 65, 253, 254, 256, 1024, 1025,
        ];
        match self.rng.u8(..10) {
            0..=5 => *self.pick(&limits),
            6..=8 => self.rng.usize(..300),
            _ => self.rng.usize(..20_000),
        }
    }

    /// A string: valid-looking, near limits, or full of odd characters.
    pub fn string(&mut self) -> String {
        let n = self.len();
        match self.rng.u8(..6) {
            0 => "a".repeat(n),
            1 => (0..n)
                .map(|_| self.rng.alphanumeric().to_ascii_lowercase())
                .collect(),
            2 => (0..n).map(|_| *self.pick(NASTY)).collect(),
            3 => (0..n.min(300))
                .map(|_| char::from_u32(self.rng.u32(..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect(),
            4 => uuid_like(&mut self.rng),
            _ => {
                let mut s: String = (0..n.min(64)).map(|_| self.rng.alphanumeric()).collect();
                if !s.is_empty() {
                    let at = self.rng.usize(..s.len());
                    s.insert(at, *self.pick(NASTY));
                }
                s
            }
        }
    }

    pub fn u32(&mut self) -> u32 {
        let edges = [0, 1, 2, 3, 5, 4095, 4096, 4097, 65_535, u32::MAX - 1, u32::MAX];
        if self.rng.bool() {
            *self.pick(&edges)
        } else {
            self.rng.u32(..)
        }
    }

    pub fn u64(&mut self) -> u64 {
        let edges = [
            0,
            1,
            (64 << 20) - 1,
            64 << 20,
            1 << 30,
            (1 << 30) - 1,
            64 << 40,
            (64 << 40) + 1,
            64 << 50,
            (64 << 50) + 1,
            1_000_000,
            1_000_001,
            1 << 63,
            u64::MAX,
        ];
        if self.rng.bool() {
            *self.pick(&edges)
        } else {
            self.rng.u64(..)
        }
    }

    pub fn f64(&mut self) -> f64 {
        let edges = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            -1.0,
            100.0,
            100.000_001,
            1e6,
            1e6 + 1.0,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        if self.rng.bool() {
            *self.pick(&edges)
        } else {
            self.rng.f64() * 200.0 - 50.0
        }
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        let n = self.len().min(4096);
        (0..n).map(|_| self.rng.u8(..)).collect()
    }

    /// Flips, cuts, duplicates or inserts bytes of `data`.
    pub fn mutate_bytes(&mut self, data: &mut Vec<u8>) {
        for _ in 0..self.rng.usize(1..4) {
            match self.rng.u8(..4) {
                0 if !data.is_empty() => {
                    let i = self.rng.usize(..data.len());
                    data[i] ^= 1 << self.rng.u8(..8);
                }
                1 if !data.is_empty() => {
                    let n = self.rng.usize(..data.len());
                    data.truncate(n);
                }
                2 => {
                    let at = self.rng.usize(..=data.len());
                    data.insert(at, self.rng.u8(..));
                }
                _ if !data.is_empty() => {
                    let i = self.rng.usize(..data.len());
                    data[i] = self.rng.u8(..);
                }
                _ => data.push(self.rng.u8(..)),
            }
        }
    }
}

/// A lowercase UUID, sometimes with one character broken.
fn uuid_like(rng: &mut fastrand::Rng) -> String {
    let mut s = uuid::Uuid::from_u128(rng.u128(..)).to_string();
    if rng.u8(..4) == 0 {
        let i = rng.usize(..s.len());
        let c = *[b'G', b'-', b'A', b'z', b' ']
            .get(rng.usize(..5))
            .unwrap_or(&b'x');
        // SAFETY of the index: the UUID text is ASCII.
        s.replace_range(i..=i, &(c as char).to_string());
    }
    s
}

/// Runs `case` with fresh seeds until the case or time budget is spent.
/// Prints the seed of a failing case (the panic message follows it).
pub fn run(name: &str, mut case: impl FnMut(&mut Gen)) {
    let secs: f64 = env_or("RPOOL_FUZZ_SECS", 2.0);
    let cases: u64 = env_or("RPOOL_FUZZ_CASES", 20_000.0) as u64;
    let base: u64 = std::env::var("RPOOL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let replay = std::env::var("RPOOL_FUZZ_SEED").is_ok();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut done = 0u64;
    while done < cases && (replay && done == 0 || !replay && Instant::now() < deadline) {
        let seed = base.wrapping_add(done);
        let mut g = Gen::new(seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut g)));
        if let Err(panic) = outcome {
            eprintln!("{name}: failed with seed {seed}; replay with RPOOL_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
        done += 1;
    }
    eprintln!("{name}: {done} cases passed (first seed {base})");
    assert!(done > 0, "{name}: ran no case");
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
