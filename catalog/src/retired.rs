//! How a served version's lifecycle shows over HTTP, for every surface that hands a version out (registry
//! pulls, downloads, network boot). A version deprecated or with an end of life is served with
//! `Deprecation` (RFC 9745: `@UNIX-SECONDS` of its deprecation day) and `Sunset` (RFC 8594: the HTTP-date of
//! its end of life), and, once deprecated, `Warning: 299 - "…"`. An end-of-life or revoked version is
//! refused (the surfaces answer 410 in their own error format, naming why) unless the request carries the
//! surface's explicit override; it is then served with a warning. Dates scheduled later are already sent
//! (RFC 9745 and 8594 allow future dates), without a warning. Pure: the version and the day in, headers or a
//! refusal out.

use crate::{
    http::download::http_date,
    model::{Day, LifecycleState, Timestamp, VersionRecord},
};

/// What a request for a version answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Serve it with these headers.
    Serve(Vec<(&'static str, String)>),
    /// Refuse it (410): it is end of life or revoked, and the request did not override.
    Refuse(Retired),
}

/// Why a retired version was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Retired {
    /// `web@1.0.0 reached its end of life on 2026-01-01`, `web@1.0.0 is revoked: CVE-…`.
    pub why: String,
    /// End of life or revoked.
    pub state: LifecycleState,
}

/// Midnight UTC of `day`.
fn midnight(day: Day) -> Timestamp {
    Timestamp(day.0.midnight().assume_utc().unix_timestamp())
}

/// The verdict on serving version `v` on `today`; `overridden` says the request asked for a retired
/// version explicitly, the way its surface allows.
pub fn verdict(v: &VersionRecord, today: Day, overridden: bool) -> Verdict {
    let l = &v.lifecycle;
    let state = l.state_on(today);
    let mut headers = Vec::new();
    if let Some(d) = l.deprecated_on {
        headers.push(("Deprecation", format!("@{}", midnight(d).0)));
    }
    if let Some(d) = l.end_of_life_on {
        headers.push(("Sunset", http_date(midnight(d))));
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
    let warn = |text: String| ("Warning", format!("299 - \"{}\"", text.replace(['"', '\\'], "'")));
    match why {
        Some(why) if !overridden => Verdict::Refuse(Retired { why, state }),
        Some(why) => {
            headers.push(warn(format!("{why}; served as asked")));
            Verdict::Serve(headers)
        }
        None => {
            if state == LifecycleState::Deprecated {
                let until = l.end_of_life_on.map_or_else(String::new, |d| format!("; end of life on {d}"));
                let since = l.deprecated_on.map_or_else(String::new, |d| format!(" since {d}"));
                headers.push(warn(format!("{} is deprecated{since}{until}", v.id())));
            }
            Verdict::Serve(headers)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lifecycle, Revocation};

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
    fn deprecated_versions_carry_their_dates_and_a_warning() {
        let v = version(Lifecycle {
            supported: true,
            deprecated_on: Some(day("2026-01-01")),
            end_of_life_on: Some(day("2026-07-01")),
            ..Default::default()
        });
        let Verdict::Serve(h) = verdict(&v, day("2026-03-01"), false) else { panic!() };
        assert_eq!(h[0], ("Deprecation", "@1767225600".to_owned()));
        assert_eq!(h[1], ("Sunset", "Wed, 01 Jul 2026 00:00:00 GMT".to_owned()));
        assert_eq!(h[2].0, "Warning");
        assert!(
            h[2].1.starts_with("299 - \"web@1.0.0 is deprecated since 2026-01-01; end of life on 2026-07-01"),
            "{}",
            h[2].1
        );
        // Before the deprecation day: the dates, no warning.
        let Verdict::Serve(h) = verdict(&v, day("2025-12-31"), false) else { panic!() };
        assert_eq!(h.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["Deprecation", "Sunset"]);
        let Verdict::Serve(h) = verdict(&version(Lifecycle::default()), day("2026-03-01"), false) else {
            panic!()
        };
        assert!(h.is_empty());
    }

    #[test]
    fn retired_versions_are_refused_unless_overridden() {
        let eol = version(Lifecycle { end_of_life_on: Some(day("2026-01-01")), ..Default::default() });
        let today = day("2026-02-01");
        let Verdict::Refuse(r) = verdict(&eol, today, false) else { panic!() };
        assert_eq!(r.state, LifecycleState::EndOfLife);
        assert_eq!(r.why, "web@1.0.0 reached its end of life on 2026-01-01");
        let Verdict::Serve(h) = verdict(&eol, today, true) else { panic!() };
        assert_eq!(h[0], ("Sunset", "Thu, 01 Jan 2026 00:00:00 GMT".to_owned()));
        assert_eq!(
            h[1],
            (
                "Warning",
                "299 - \"web@1.0.0 reached its end of life on 2026-01-01; served as asked\"".to_owned()
            )
        );
        let revoked = version(Lifecycle {
            revoked: Some(Revocation {
                reason: "CVE-2026-1 \"quoted\"".into(),
                at: Timestamp(0),
                by: "x".into(),
                inherited_from: Some("base@2.0.0".into()),
            }),
            ..Default::default()
        });
        let Verdict::Refuse(r) = verdict(&revoked, today, false) else { panic!() };
        assert_eq!(r.state, LifecycleState::Revoked);
        assert_eq!(
            r.why,
            "web@1.0.0 is revoked: it is built FROM base@2.0.0, which was revoked: CVE-2026-1 \"quoted\""
        );
        let Verdict::Serve(h) = verdict(&revoked, today, true) else { panic!() };
        assert!(h[0].1.contains("CVE-2026-1 'quoted'"), "a quote would end the warning's text: {}", h[0].1);
    }
}
