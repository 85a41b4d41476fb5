//! The lifecycle of a kiln version, as a registry pull sees it. A deprecated version is served with
//! `Deprecation` (RFC 9745: `@UNIX-SECONDS` of its deprecation day), `Sunset` (RFC 8594: the HTTP-date of
//! its end of life, when it has one) and `Warning: 299 - "…"`. An end-of-life or revoked version is
//! refused with 410 and an error body naming why, unless it is pulled by digest with the explicit
//! override (`Kiln-Allow-Retired: true` or `?allow-retired=1`); it is then served with the warning. A
//! version with a deprecation or end of life scheduled later already carries those dates (RFC 9745 and
//! 8594 allow future dates) but no warning. Pure: the version and the day in, headers or a refusal out.

use super::error::{Code, RegistryError};
use crate::model::{Day, LifecycleState, VersionRecord};

/// What a pull of a kiln version answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Serve it with these headers.
    Serve(Vec<(&'static str, String)>),
    Refuse(RegistryError),
}

/// Midnight UTC of `day` in Unix seconds.
fn unix(day: Day) -> i64 {
    day.0.midnight().assume_utc().unix_timestamp()
}

/// `day` at midnight as an HTTP-date (IMF-fixdate): `Sun, 06 Nov 1994 00:00:00 GMT`.
pub fn http_date(day: Day) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let d = day.0;
    format!(
        "{}, {:02} {} {:04} 00:00:00 GMT",
        DAYS[usize::from(d.weekday().number_days_from_monday())],
        d.day(),
        MONTHS[usize::from(u8::from(d.month()) - 1)],
        d.year()
    )
}

/// The verdict on pulling version `v` on `today`; `by_digest` and `allow_retired` say how it was asked
/// for.
pub fn verdict(v: &VersionRecord, today: Day, by_digest: bool, allow_retired: bool) -> Verdict {
    let l = &v.lifecycle;
    let state = l.state_on(today);
    let mut headers = Vec::new();
    if let Some(d) = l.deprecated_on {
        headers.push(("Deprecation", format!("@{}", unix(d))));
    }
    if let Some(d) = l.end_of_life_on {
        headers.push(("Sunset", http_date(d)));
    }
    let why = match state {
        LifecycleState::Revoked => {
            let r = l.revoked.as_ref();
            let reason = r.map_or("", |r| r.reason.as_str());
            let inherited = r.and_then(|r| r.inherited_from.as_deref());
            Some(match inherited {
                Some(from) => {
                    format!("{} is revoked: it is built FROM {from}, which was revoked: {reason}", v.id())
                }
                None => format!("{} is revoked: {reason}", v.id()),
            })
        }
        LifecycleState::EndOfLife => Some(format!(
            "{} reached its end of life on {}",
            v.id(),
            l.end_of_life_on.map_or_else(String::new, |d| d.to_string())
        )),
        _ => None,
    };
    match why {
        Some(why) if !(by_digest && allow_retired) => Verdict::Refuse(
            RegistryError::new(
                Code::Denied,
                format!(
                    "{why}; pull it by digest with the header `Kiln-Allow-Retired: true` to get it anyway"
                ),
            )
            .with_status(410)
            .with_detail(serde_json::json!({
                "family": v.family,
                "version": v.version.to_string(),
                "state": state,
                "end_of_life_on": l.end_of_life_on,
                "revoked": l.revoked,
            })),
        ),
        Some(why) => {
            headers.push(("Warning", format!("299 - \"{}\"", why.replace('"', "'"))));
            Verdict::Serve(headers)
        }
        None => {
            if state == LifecycleState::Deprecated {
                let until = l.end_of_life_on.map_or_else(String::new, |d| format!("; end of life on {d}"));
                let since = l.deprecated_on.map_or_else(String::new, |d| format!(" since {d}"));
                headers.push(("Warning", format!("299 - \"{} is deprecated{since}{until}\"", v.id())));
            }
            Verdict::Serve(headers)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lifecycle, Revocation, Timestamp};

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn version(lifecycle: Lifecycle) -> VersionRecord {
        VersionRecord {
            family: "web".into(),
            version: "1.0.0".parse().unwrap(),
            manifest_digest: String::new(),
            image_digest: None,
            published_at: Timestamp(0),
            published_by: String::new(),
            signed_by: String::new(),
            parent: None,
            claimed: Vec::new(),
            certified: Vec::new(),
            artifacts: Vec::new(),
            files: Vec::new(),
            policy: Default::default(),
            lifecycle,
        }
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(day("1994-11-06")), "Sun, 06 Nov 1994 00:00:00 GMT");
        assert_eq!(http_date(day("2027-01-31")), "Sun, 31 Jan 2027 00:00:00 GMT");
    }

    #[test]
    fn deprecated_versions_carry_their_dates_and_a_warning() {
        let v = version(Lifecycle {
            supported: true,
            deprecated_on: Some(day("2026-01-01")),
            end_of_life_on: Some(day("2026-07-01")),
            ..Default::default()
        });
        let Verdict::Serve(h) = verdict(&v, day("2026-03-01"), false, false) else { panic!() };
        assert_eq!(h[0], ("Deprecation", "@1767225600".to_owned()));
        assert_eq!(h[1], ("Sunset", "Wed, 01 Jul 2026 00:00:00 GMT".to_owned()));
        assert_eq!(h[2].0, "Warning");
        assert!(
            h[2].1.starts_with("299 - \"web@1.0.0 is deprecated since 2026-01-01; end of life on 2026-07-01"),
            "{}",
            h[2].1
        );
        // Before the deprecation day: the dates, no warning.
        let Verdict::Serve(h) = verdict(&v, day("2025-12-31"), false, false) else { panic!() };
        assert_eq!(h.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["Deprecation", "Sunset"]);
        let Verdict::Serve(h) = verdict(&version(Lifecycle::default()), day("2026-03-01"), false, false)
        else {
            panic!()
        };
        assert!(h.is_empty());
    }

    #[test]
    fn retired_versions_are_refused_unless_asked_for_by_digest_with_the_override() {
        let eol = version(Lifecycle { end_of_life_on: Some(day("2026-01-01")), ..Default::default() });
        let today = day("2026-02-01");
        for (by_digest, allow) in [(false, false), (false, true), (true, false)] {
            let Verdict::Refuse(e) = verdict(&eol, today, by_digest, allow) else {
                panic!("{by_digest} {allow}")
            };
            assert_eq!((e.status, e.code), (410, Code::Denied));
            assert!(e.message.contains("end of life on 2026-01-01"), "{}", e.message);
            assert_eq!(e.detail.as_ref().unwrap()["state"], "end-of-life");
        }
        let Verdict::Serve(h) = verdict(&eol, today, true, true) else { panic!() };
        assert!(h.iter().any(|(k, v)| *k == "Warning" && v.contains("end of life")));
        let revoked = version(Lifecycle {
            revoked: Some(Revocation {
                reason: "CVE-2026-1".into(),
                at: Timestamp(0),
                by: "x".into(),
                inherited_from: None,
            }),
            ..Default::default()
        });
        let Verdict::Refuse(e) = verdict(&revoked, today, false, false) else { panic!() };
        assert!(e.message.contains("revoked: CVE-2026-1"), "{}", e.message);
        assert_eq!(e.detail.as_ref().unwrap()["revoked"]["reason"], "CVE-2026-1");
    }
}
