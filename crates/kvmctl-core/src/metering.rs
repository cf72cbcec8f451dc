//! Metering arithmetic: hours, which hours are due, and what an hour costs.
//!
//! A usage record covers one VM for one clock hour `[hour, hour + 3600)`, written once that
//! hour is over. Prices are decimals held as millionths (`Money`), so sums are exact.

/// Seconds in an hour.
pub const HOUR: i64 = 3600;

/// The start of the hour `t` (Unix seconds) falls in.
pub fn hour_of(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

/// The hours that are over at `now` and not yet metered, given the last one metered
/// (`None`: metering starts now, with the hour that just ended). At most `limit` hours, the
/// oldest first, so a long outage is caught up in bounded passes.
pub fn hours_due(last_metered: Option<i64>, now: i64, limit: usize) -> Vec<i64> {
    let last_over = hour_of(now) - HOUR;
    let first = match last_metered {
        Some(h) => hour_of(h) + HOUR,
        None => last_over,
    };
    (0..).map(|i| first + i * HOUR).take_while(|h| *h <= last_over).take(limit).collect()
}

/// `2026-11-22T14:03:00Z` from Unix seconds.
pub fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Unix seconds from `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn parse_utc(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let num = |p: &str, len: usize| if p.len() == len && p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<i64>().ok() } else { None };
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next()?, 4)?, num(dp.next()?, 2)?, num(dp.next()?, 2)?);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut tp = t.split(':');
            let (h, mi, se) = (num(tp.next()?, 2)?, num(tp.next()?, 2)?, num(tp.next()?, 2)?);
            if tp.next().is_some() || h > 23 || mi > 59 || se > 59 {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let t = (era * 146_097 + doe - 719_468) * 86_400 + secs;
    // 2026-02-31 and the like do not come back the same.
    (utc(t)[..10] == *date).then_some(t)
}

/// An amount of money in millionths of the currency unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Money(pub i64);

impl Money {
    /// Parses a non-negative decimal with at most 6 decimals (`0.0125`, `3`, `12.5`).
    pub fn parse(s: &str) -> Option<Money> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() || int.len() > 12 || frac.len() > 6 || s.ends_with('.') {
            return None;
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole: i64 = int.parse().ok()?;
        let micros: i64 = format!("{frac:0<6}").parse().ok()?;
        whole.checked_mul(1_000_000)?.checked_add(micros).map(Money)
    }

    /// `self × percent / 100`, rounded half up to the millionth.
    pub fn percent(self, percent: u32) -> Money {
        Money(((self.0 as i128 * percent as i128 + 50) / 100) as i64)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
}

impl std::fmt::Display for Money {
    /// Six decimals, trailing zeros trimmed to at least two: `0.0125`, `3.00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let frac = format!("{:06}", v % 1_000_000);
        let trimmed = frac.trim_end_matches('0');
        let frac = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
        write!(f, "{sign}{}.{frac}", v / 1_000_000)
    }
}

/// What one VM-hour costs: the hourly price when the VM ran (or was on its way), the
/// stopped share of it otherwise.
pub fn hour_cost(price_hourly: Money, running: bool, stopped_percent: u32) -> Money {
    if running {
        price_hourly
    } else {
        price_hourly.percent(stopped_percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hours() {
        assert_eq!(hour_of(7199), 3600);
        assert_eq!(hour_of(-1), -3600);
        // First pass: only the hour that just ended.
        assert_eq!(hours_due(None, 3 * HOUR + 5, 100), vec![2 * HOUR]);
        // Caught up after three hours down; nothing twice.
        assert_eq!(hours_due(Some(2 * HOUR), 6 * HOUR + 1, 100), vec![3 * HOUR, 4 * HOUR, 5 * HOUR]);
        assert_eq!(hours_due(Some(5 * HOUR), 6 * HOUR + 1, 100), Vec::<i64>::new());
        assert_eq!(hours_due(Some(0), 100 * HOUR, 3), vec![HOUR, 2 * HOUR, 3 * HOUR]);
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_355_459), "2026-11-22T13:50:59Z");
        assert_eq!(parse_utc("2026-11-22T13:50:59Z"), Some(1_795_355_459));
        assert_eq!(parse_utc("2026-11-22"), Some(1_795_305_600));
        for bad in ["2026-02-31", "2026-13-01", "26-11-22", "2026-11-22T25:00:00Z", "2026-11-22T13:50:59", "yesterday"] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn money() {
        assert_eq!(Money::parse("0.0125"), Some(Money(12_500)));
        assert_eq!(Money::parse("3"), Some(Money(3_000_000)));
        assert_eq!(Money(12_500).to_string(), "0.0125");
        assert_eq!(Money(3_000_000).to_string(), "3.00");
        assert_eq!(Money(1_500_000).to_string(), "1.50");
        for bad in ["", ".5", "1.", "-1", "1.1234567", "1e3", "0x10", " 1"] {
            assert_eq!(Money::parse(bad), None, "{bad:?}");
        }
        assert_eq!(hour_cost(Money(10_000), true, 0), Money(10_000));
        assert_eq!(hour_cost(Money(10_000), false, 25), Money(2_500));
        assert_eq!(Money(1).percent(50), Money(1), "half a millionth rounds up");
    }

    proptest! {
        #[test]
        fn dates_round_trip(t in -10_000_000_000i64..10_000_000_000) {
            prop_assert_eq!(parse_utc(&utc(t)), Some(t));
        }

        #[test]
        fn money_round_trips(micros in 0i64..1_000_000_000_000_000) {
            let m = Money(micros);
            prop_assert_eq!(Money::parse(&m.to_string()), Some(m));
        }

        /// Passes over any sequence of wake-ups meter every hour exactly once, in order.
        #[test]
        fn every_hour_once(steps in proptest::collection::vec(0i64..20_000, 1..40), limit in 1usize..5) {
            let start = 1_795_000_000i64;
            let mut now = start;
            let mut last = None;
            let mut metered = Vec::new();
            // Metering begins with the hour before the first pass.
            let first_pass = start + steps[0];
            for s in steps {
                now += s;
                let due = hours_due(last, now, limit);
                if let Some(h) = due.last() { last = Some(*h); }
                metered.extend(due);
            }
            // Drain what the limit held back.
            loop {
                let due = hours_due(last, now, limit);
                if due.is_empty() { break; }
                last = due.last().copied();
                metered.extend(due);
            }
            let expected: Vec<i64> = (0..).map(|i| hour_of(first_pass) - HOUR + i * HOUR).take_while(|h| *h <= hour_of(now) - HOUR).collect();
            prop_assert_eq!(metered, expected);
        }
    }
}
