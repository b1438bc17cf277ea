//! Project schedules: `every 30m` (a number and one of s, m, h, d) or a
//! cron expression (5 fields, or 6 with seconds first, in the machine's
//! local time; parsed by the `croner` crate).

use chrono::{DateTime, Local, Utc};
use std::str::FromStr;
use std::time::Duration;

/// When a project runs on its own.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

/// Shortest `every` interval: anything faster only re-checks an idle queue.
const MIN_EVERY: Duration = Duration::from_secs(1);

impl Schedule {
    /// Parses `every N(s|m|h|d)` or a cron expression. The error says what
    /// was expected and gives examples.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let expected = "expected `every N` with a unit (s, m, h or d), e.g. `every 30m`, or a cron expression, e.g. `*/15 * * * *` (minute hour day-of-month month day-of-week)";
        if let Some(rest) = t.strip_prefix("every") {
            let rest = rest.trim();
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (n, unit) = rest.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("schedule `{text}`: no number after `every`; {expected}"))?;
            let secs = match unit.trim() {
                "s" | "sec" | "secs" | "second" | "seconds" => n,
                "m" | "min" | "mins" | "minute" | "minutes" => n.saturating_mul(60),
                "h" | "hour" | "hours" => n.saturating_mul(3600),
                "d" | "day" | "days" => n.saturating_mul(86_400),
                other => {
                    return Err(format!(
                        "schedule `{text}`: unknown unit `{other}`; {expected}"
                    ))
                }
            };
            let every = Duration::from_secs(secs);
            if every < MIN_EVERY {
                return Err(format!(
                    "schedule `{text}`: the interval must be at least 1 s; {expected}"
                ));
            }
            return Ok(Schedule::Every(every));
        }
        croner::Cron::from_str(t)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| {
                format!("schedule `{text}` is not a valid cron expression ({e}); {expected}")
            })
    }

    /// The first firing strictly after `after`; None when a cron
    /// expression never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron(c) => c
                .find_next_occurrence(&after.with_timezone(&Local), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {} s", d.as_secs()),
            Schedule::Cron(c) => write!(f, "cron `{}`", c.pattern),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_takes_seconds_minutes_hours_and_days() {
        let secs = |t: &str| match Schedule::parse(t).unwrap() {
            Schedule::Every(d) => d.as_secs(),
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(secs("every 2s"), 2);
        assert_eq!(secs("every 30m"), 1800);
        assert_eq!(secs(" every 1 h "), 3600);
        assert_eq!(secs("every 1d"), 86_400);
        assert_eq!(secs("every 5 minutes"), 300);
        let at = Utc::now();
        assert_eq!(
            Schedule::parse("every 30m").unwrap().next_after(at),
            Some(at + chrono::Duration::minutes(30))
        );
    }

    #[test]
    fn bad_schedules_say_what_is_expected() {
        for bad in [
            "every",
            "every 0s",
            "every 5 fortnights",
            "sometimes",
            "61 * * * *",
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("every 30m"), "{err}");
        }
    }

    #[test]
    fn cron_expressions_fire_at_their_next_match() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let now = Utc::now();
        let next = s.next_after(now).unwrap();
        assert!(next > now && next <= now + chrono::Duration::minutes(15));
        assert_eq!(next.timestamp() % 900, 0, "{next}");
        // Six fields: seconds first.
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        let next = s.next_after(now).unwrap();
        assert!(next <= now + chrono::Duration::seconds(10));
        assert!(s.to_string().contains("cron"));
    }
}
