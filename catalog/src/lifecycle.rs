//! The lifecycle rules: what a version's lifecycle is when it is published ([`on_publish`]), what moving a
//! channel does ([`promote`]: only to a certified, live version; `stable` makes it supported and schedules
//! the deprecation of everything older), what a manual change may do ([`apply_change`]), and how a
//! revocation flags the images built from a revoked one ([`flag_descendant`]).
//!
//! Pure: the moment of a change is an input; the stores apply what these functions return.

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{
    is_name, ChannelMove, Day, FamilyState, Lifecycle, LifecyclePolicy, Revocation, Timestamp,
};

/// The channel whose moves make versions supported and deprecate older ones.
pub const STABLE: &str = "stable";

/// Why a promotion or a lifecycle change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "`{channel}` is not a channel name (lowercase letters, digits, `-`, `_`, `.`, starting with a letter \
         or digit, at most 64 bytes)"
    )]
    BadChannelName { channel: String },
    #[error("family {family} has no version {version}")]
    UnknownVersion { family: String, version: semver::Version },
    #[error("{version} is certified for no contract: a channel only points at certified versions")]
    NotCertified { version: String },
    #[error("{version} was revoked on {}: {reason}", Day::of(*at))]
    Revoked { version: String, reason: String, at: Timestamp },
    #[error("{version} reached its end of life on {since}")]
    EndOfLife { version: String, since: Day },
    #[error("the version was revoked on {}: {reason}; a revoked version cannot change any more", Day::of(*at))]
    AlreadyRevoked { reason: String, at: Timestamp },
    #[error("nothing to change: give a state, a deprecation or end-of-life date, or a revocation")]
    NothingToChange,
    #[error("a revocation needs a reason")]
    EmptyRevokeReason,
    #[error("end of life ({end_of_life_on}) must not be before deprecation ({deprecated_on})")]
    EndOfLifeBeforeDeprecation { deprecated_on: Day, end_of_life_on: Day },
}

/// The lifecycle of a version published on `published`: a candidate, its end of life `support_months`
/// after publication when the policy sets them.
pub fn on_publish(policy: &LifecyclePolicy, published: Day) -> Lifecycle {
    Lifecycle {
        end_of_life_on: policy.support_months.map(|m| published.plus_months(m)),
        ..Lifecycle::default()
    }
}

/// What a promotion changes: the channel's move and the new lifecycle of every version it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub channel_move: ChannelMove,
    /// The promoted version first (when it changes), then older versions, newest first.
    pub lifecycle_updates: Vec<(semver::Version, Lifecycle)>,
}

/// Moves `channel` of `family` to `to` at `at`, by `by`. `Ok(None)` when the channel already points at `to`
/// (nothing changes). The version must exist, be certified, and be neither revoked nor end of life on
/// `at`'s day. When the channel is [`STABLE`], `to` becomes supported from that day (unless it already
/// was), and every older version that is not revoked and has no deprecation date yet is deprecated
/// `deprecate_after_days` (the promoted version's policy) after that day, never later than its own end of
/// life. Without `deprecate_after_days`, older versions are left as they are.
pub fn promote(
    family: &FamilyState,
    channel: &str,
    to: &semver::Version,
    at: Timestamp,
    by: &str,
) -> Result<Option<Promotion>, LifecycleError> {
    if !is_name(channel) {
        return Err(LifecycleError::BadChannelName { channel: channel.to_owned() });
    }
    let index = family
        .versions
        .binary_search_by(|r| r.version.cmp(to))
        .map_err(|_| LifecycleError::UnknownVersion { family: family.name.clone(), version: to.clone() })?;
    let target = &family.versions[index];
    let day = Day::of(at);
    if let Some(r) = &target.lifecycle.revoked {
        return Err(LifecycleError::Revoked { version: target.id(), reason: r.reason.clone(), at: r.at });
    }
    if let Some(since) = target.lifecycle.end_of_life_on.filter(|d| *d <= day) {
        return Err(LifecycleError::EndOfLife { version: target.id(), since });
    }
    if target.certified.is_empty() {
        return Err(LifecycleError::NotCertified { version: target.id() });
    }
    let from = family.channels.get(channel).map(|c| c.version.clone());
    if from.as_ref() == Some(to) {
        return Ok(None);
    }

    let mut lifecycle_updates = Vec::new();
    if channel == STABLE {
        let current = &target.lifecycle;
        if !current.supported || current.supported_since.is_none() {
            let supported_since = current.supported_since.or(Some(day));
            lifecycle_updates
                .push((to.clone(), Lifecycle { supported: true, supported_since, ..current.clone() }));
        }
        if let Some(after) = target.policy.deprecate_after_days {
            let deprecate_on = day.plus_days(after);
            for older in family.versions[..index].iter().rev() {
                let l = &older.lifecycle;
                if l.revoked.is_some() || l.deprecated_on.is_some() {
                    continue;
                }
                let on = l.end_of_life_on.map_or(deprecate_on, |eol| eol.min(deprecate_on));
                lifecycle_updates
                    .push((older.version.clone(), Lifecycle { deprecated_on: Some(on), ..l.clone() }));
            }
        }
    }
    Ok(Some(Promotion {
        channel_move: ChannelMove { at, by: by.to_owned(), from, to: to.clone() },
        lifecycle_updates,
    }))
}

/// A manual lifecycle change (`kiln lifecycle`, the API's body). Absent fields stay as they are; for the
/// dates, an explicit `null` clears the date.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleChange {
    /// `true`: supported (from the day of the change, unless it already had a date); `false`: back to a
    /// candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<bool>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub deprecated_on: Option<Option<Day>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub end_of_life_on: Option<Option<Day>>,
    /// Revoke, for this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<String>,
}

impl LifecycleChange {
    pub fn is_empty(&self) -> bool {
        self.supported.is_none()
            && self.deprecated_on.is_none()
            && self.end_of_life_on.is_none()
            && self.revoke.is_none()
    }
}

/// A field that is present: `null` is `Some(None)`, absence (through `#[serde(default)]`) `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `current` with `change` applied at `at` by `by`. A revoked version cannot change any more; an empty
/// change, an empty revocation reason, and an end of life before the deprecation are refused.
pub fn apply_change(
    current: &Lifecycle,
    change: &LifecycleChange,
    at: Timestamp,
    by: &str,
) -> Result<Lifecycle, LifecycleError> {
    if let Some(r) = &current.revoked {
        return Err(LifecycleError::AlreadyRevoked { reason: r.reason.clone(), at: r.at });
    }
    if change.is_empty() {
        return Err(LifecycleError::NothingToChange);
    }
    let mut next = current.clone();
    match change.supported {
        Some(true) => {
            next.supported = true;
            next.supported_since = next.supported_since.or(Some(Day::of(at)));
        }
        Some(false) => {
            next.supported = false;
            next.supported_since = None;
        }
        None => {}
    }
    if let Some(d) = change.deprecated_on {
        next.deprecated_on = d;
    }
    if let Some(d) = change.end_of_life_on {
        next.end_of_life_on = d;
    }
    if let (Some(deprecated_on), Some(end_of_life_on)) = (next.deprecated_on, next.end_of_life_on) {
        if end_of_life_on < deprecated_on {
            return Err(LifecycleError::EndOfLifeBeforeDeprecation { deprecated_on, end_of_life_on });
        }
    }
    if let Some(reason) = &change.revoke {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(LifecycleError::EmptyRevokeReason);
        }
        next.revoked =
            Some(Revocation { reason: reason.to_owned(), at, by: by.to_owned(), inherited_from: None });
    }
    Ok(next)
}

/// The revocation an image built FROM `ancestor` (`family@version`, revoked with `revocation`) gets: the
/// same reason, moment and actor, naming where it came from. When `revocation` is itself inherited, the
/// origin it names is kept, so a whole chain of descendants names the version whose revocation started it.
pub fn inherited(revocation: &Revocation, ancestor: &str) -> Revocation {
    Revocation {
        inherited_from: Some(revocation.inherited_from.clone().unwrap_or_else(|| ancestor.to_owned())),
        ..revocation.clone()
    }
}

/// The lifecycle of a descendant of `ancestor` once `ancestor` is revoked with `revocation`; `None` when the
/// descendant is already revoked (its own revocation stays).
pub fn flag_descendant(current: &Lifecycle, revocation: &Revocation, ancestor: &str) -> Option<Lifecycle> {
    if current.revoked.is_some() {
        return None;
    }
    Some(Lifecycle { revoked: Some(inherited(revocation, ancestor)), ..current.clone() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        model::{FamilyState, LifecycleState},
        resolve::{resolve, testing::*, Reason, ResolveRequest},
    };

    const AT: &str = "2026-06-15T09:30:00Z";

    fn policy(support_months: Option<u32>, deprecate_after_days: Option<u32>) -> LifecyclePolicy {
        LifecyclePolicy { support_months, deprecate_after_days }
    }

    #[test]
    fn a_published_version_is_a_candidate_until_the_end_of_its_support() {
        let cases = [
            (policy(None, None), "2026-01-31", None),
            (policy(None, Some(30)), "2026-01-31", None),
            (policy(Some(12), None), "2026-01-31", Some("2027-01-31")),
            // The day of month is clamped to the target month's length.
            (policy(Some(1), None), "2026-01-31", Some("2026-02-28")),
            (policy(Some(25), None), "2026-11-22", Some("2028-12-22")),
        ];
        for (p, published, eol) in cases {
            let l = on_publish(&p, day(published));
            assert_eq!(
                l,
                Lifecycle { end_of_life_on: eol.map(day), ..Lifecycle::default() },
                "{p:?} {published}"
            );
            assert_eq!(l.state_on(day(published)), LifecycleState::Candidate);
        }
    }

    /// 1.0.0 supported (stable), 1.1.0 and 1.2.0 candidates, 2.0.0 uncertified.
    fn family() -> FamilyBuilder {
        FamilyBuilder::new("debian-minimal")
            .version("1.0.0", &["base-os@1.0.0"])
            .lifecycle("1.0.0", |l| {
                l.supported = true;
                l.supported_since = Some(day("2026-01-10"));
            })
            .version("1.1.0", &["base-os@1.0.0"])
            .version("1.2.0", &["base-os@1.0.0"])
            .version("2.0.0", &[])
            .channel("stable", &["1.0.0"])
    }

    #[test]
    fn a_channel_only_moves_to_a_certified_live_version() {
        type Edit = fn(FamilyBuilder) -> FamilyBuilder;
        let as_is: Edit = |b| b;
        let revoked: Edit = |b| b.revoked("1.2.0", "CVE-2026-7");
        let eol_today: Edit = |b| b.end_of_life_on("1.2.0", "2026-06-15");
        let eol_tomorrow: Edit = |b| b.end_of_life_on("1.2.0", "2026-06-16");
        let deprecated: Edit = |b| b.deprecated_on("1.2.0", "2026-06-01");
        let cases: Vec<(Edit, &str, &str, Result<(), &str>)> = vec![
            (as_is, "stable", "1.2.0", Ok(())),
            (as_is, "nightly-2", "1.2.0", Ok(())),
            (as_is, "stable", "1.3.0", Err("family debian-minimal has no version 1.3.0")),
            (as_is, "stable", "2.0.0", Err("debian-minimal@2.0.0 is certified for no contract: a channel only points at certified versions")),
            (as_is, "Stable", "1.2.0", Err("`Stable` is not a channel name")),
            (as_is, "", "1.2.0", Err("`` is not a channel name")),
            (as_is, "-x", "1.2.0", Err("`-x` is not a channel name")),
            (revoked, "candidate", "1.2.0", Err("debian-minimal@1.2.0 was revoked on 2026-03-01: CVE-2026-7")),
            (eol_today, "stable", "1.2.0", Err("debian-minimal@1.2.0 reached its end of life on 2026-06-15")),
            (eol_tomorrow, "stable", "1.2.0", Ok(())),
            (deprecated, "stable", "1.2.0", Ok(())),
        ];
        for (i, (edit, channel, to, want)) in cases.into_iter().enumerate() {
            let f = edit(family()).build();
            let got = promote(&f, channel, &ver(to), ts(AT), "release");
            match want {
                Ok(()) => {
                    let p = got.unwrap().expect("a move");
                    assert_eq!(p.channel_move.to, ver(to), "case {i}");
                }
                Err(msg) => {
                    let err = got.unwrap_err().to_string();
                    assert!(err.starts_with(msg), "case {i}: {err}");
                }
            }
        }
        // The errors are typed, with the facts.
        let f = eol_today(family()).build();
        assert_eq!(
            promote(&f, "stable", &ver("1.2.0"), ts(AT), "release"),
            Err(LifecycleError::EndOfLife {
                version: "debian-minimal@1.2.0".into(),
                since: day("2026-06-15")
            })
        );
    }

    #[test]
    fn moving_a_channel_where_it_points_changes_nothing() {
        let f = family().build();
        assert_eq!(promote(&f, "stable", &ver("1.0.0"), ts(AT), "release"), Ok(None));
        // Still checked: a channel is not confirmed on a revoked version.
        let f = family().revoked("1.0.0", "CVE").build();
        assert!(matches!(
            promote(&f, "stable", &ver("1.0.0"), ts(AT), "release"),
            Err(LifecycleError::Revoked { .. })
        ));
    }

    #[test]
    fn a_channel_other_than_stable_moves_without_lifecycle_changes() {
        let f = family().policy("1.2.0", policy(None, Some(30))).build();
        let p = promote(&f, "candidate", &ver("1.2.0"), ts(AT), "release").unwrap().unwrap();
        assert_eq!(
            p,
            Promotion {
                channel_move: ChannelMove { at: ts(AT), by: "release".into(), from: None, to: ver("1.2.0") },
                lifecycle_updates: vec![],
            }
        );
    }

    #[test]
    fn stable_supports_the_version_and_schedules_the_deprecation_of_older_ones() {
        let f = family()
            .version("0.9.0", &["base-os@1.0.0"])
            .revoked("0.9.0", "CVE-old")
            .version("0.8.0", &["base-os@1.0.0"])
            .deprecated_on("0.8.0", "2026-05-01")
            .version("0.7.0", &["base-os@1.0.0"])
            .end_of_life_on("0.7.0", "2026-07-01")
            .version("0.6.0", &["base-os@1.0.0"])
            .end_of_life_on("0.6.0", "2026-07-15")
            // The promoted version's policy counts, not the older versions'.
            .policy("1.1.0", policy(Some(12), Some(30)))
            .policy("1.2.0", policy(None, Some(1)))
            .build();
        let p = promote(&f, "stable", &ver("1.1.0"), ts(AT), "release").unwrap().unwrap();
        assert_eq!(
            p.channel_move,
            ChannelMove { at: ts(AT), by: "release".into(), from: Some(ver("1.0.0")), to: ver("1.1.0") }
        );
        let updates: Vec<(String, Lifecycle)> =
            p.lifecycle_updates.iter().map(|(v, l)| (v.to_string(), l.clone())).collect();
        let was = |v: &str| f.version(&ver(v)).unwrap().lifecycle.clone();
        assert_eq!(
            updates,
            vec![
                (
                    "1.1.0".into(),
                    Lifecycle { supported: true, supported_since: Some(day("2026-06-15")), ..was("1.1.0") }
                ),
                // 15 June + 30 days.
                ("1.0.0".into(), Lifecycle { deprecated_on: Some(day("2026-07-15")), ..was("1.0.0") }),
                // Never later than its own end of life: before, and exactly on the boundary.
                ("0.7.0".into(), Lifecycle { deprecated_on: Some(day("2026-07-01")), ..was("0.7.0") }),
                ("0.6.0".into(), Lifecycle { deprecated_on: Some(day("2026-07-15")), ..was("0.6.0") }),
            ]
        );
        // 1.2.0 (newer), 0.9.0 (revoked) and 0.8.0 (already deprecated) are left alone.

        // A version supported before keeps its date; without deprecate_after_days nothing older changes.
        let f = family()
            .lifecycle("1.2.0", |l| {
                l.supported = true;
                l.supported_since = Some(day("2026-02-02"));
            })
            .build();
        let p = promote(&f, "stable", &ver("1.2.0"), ts(AT), "release").unwrap().unwrap();
        assert_eq!(p.lifecycle_updates, vec![]);
        // Supported without a date: the day of the promotion.
        let f = family().lifecycle("1.2.0", |l| l.supported = true).build();
        let p = promote(&f, "stable", &ver("1.2.0"), ts(AT), "release").unwrap().unwrap();
        assert_eq!(p.lifecycle_updates[0].1.supported_since, Some(day("2026-06-15")));
    }

    fn apply(f: &mut FamilyState, p: &Promotion) {
        let ch = f.channels.entry("stable".into()).or_insert_with(|| crate::model::Channel {
            name: "stable".into(),
            version: p.channel_move.to.clone(),
            history: vec![],
        });
        ch.version = p.channel_move.to.clone();
        ch.history.push(p.channel_move.clone());
        for (v, l) in &p.lifecycle_updates {
            let i = f.versions.iter().position(|r| &r.version == v).unwrap();
            f.versions[i].lifecycle = l.clone();
        }
    }

    #[test]
    fn a_promotion_shows_in_what_resolves() {
        let mut f = family().policy("1.1.0", policy(None, Some(30))).build();
        let p = promote(&f, "stable", &ver("1.1.0"), ts(AT), "release").unwrap().unwrap();
        apply(&mut f, &p);
        let req = ResolveRequest {
            contracts: vec!["base-os@^1".parse().unwrap()],
            channel: Some("stable".into()),
            supported_until: Some(day("2026-07-15")),
            ..ResolveRequest::default()
        };
        let r = resolve(&f, &req, day("2026-06-15")).unwrap();
        assert_eq!(
            r.chosen.as_ref().map(|c| (c.version.to_string(), c.state)),
            Some(("1.1.0".into(), LifecycleState::Supported))
        );
        // On the day the old stable is deprecated, a request for support until then does not get it.
        let old_only = ResolveRequest { supported_until: Some(day("2026-07-14")), ..req.clone() };
        let f_without_new = {
            let mut g = f.clone();
            g.versions.retain(|v| v.version != ver("1.1.0"));
            g
        };
        let r = resolve(&f_without_new, &old_only, day("2026-06-15")).unwrap();
        assert_eq!(r.chosen.map(|c| c.version), Some(ver("1.0.0")));
        let r = resolve(&f_without_new, &req, day("2026-06-15")).unwrap();
        assert_eq!(r.chosen, None);
        assert!(r.passed_over.iter().any(|p| p.version == ver("1.0.0")
            && p.reasons
                == [Reason::DeprecatedBefore { on: day("2026-07-15"), supported_until: day("2026-07-15") }]));
    }

    fn change(v: serde_json::Value) -> LifecycleChange {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn manual_changes_follow_the_rules() {
        let candidate = Lifecycle::default();
        let dated = Lifecycle {
            supported: true,
            supported_since: Some(day("2026-01-10")),
            deprecated_on: Some(day("2026-09-01")),
            end_of_life_on: Some(day("2027-01-01")),
            revoked: None,
        };
        let with = |base: &Lifecycle, f: fn(&mut Lifecycle)| {
            let mut l = base.clone();
            f(&mut l);
            l
        };
        let cases: Vec<(&Lifecycle, serde_json::Value, Result<Lifecycle, LifecycleError>)> = vec![
            (
                &candidate,
                json!({"supported": true}),
                Ok(with(&candidate, |l| {
                    l.supported = true;
                    l.supported_since = Some("2026-06-15".parse().unwrap());
                })),
            ),
            (&dated, json!({"supported": true}), Ok(dated.clone())),
            (
                &dated,
                json!({"supported": false}),
                Ok(with(&dated, |l| {
                    l.supported = false;
                    l.supported_since = None;
                })),
            ),
            (
                &dated,
                json!({"deprecated_on": "2026-10-01"}),
                Ok(with(&dated, |l| l.deprecated_on = Some("2026-10-01".parse().unwrap()))),
            ),
            (&dated, json!({"deprecated_on": null}), Ok(with(&dated, |l| l.deprecated_on = None))),
            (&dated, json!({"end_of_life_on": null}), Ok(with(&dated, |l| l.end_of_life_on = None))),
            // End of life on the day of deprecation is fine, a day before is not.
            (
                &dated,
                json!({"end_of_life_on": "2026-09-01"}),
                Ok(with(&dated, |l| l.end_of_life_on = Some("2026-09-01".parse().unwrap()))),
            ),
            (
                &dated,
                json!({"end_of_life_on": "2026-08-31"}),
                Err(LifecycleError::EndOfLifeBeforeDeprecation {
                    deprecated_on: day("2026-09-01"),
                    end_of_life_on: day("2026-08-31"),
                }),
            ),
            (
                &dated,
                json!({"deprecated_on": "2027-01-02"}),
                Err(LifecycleError::EndOfLifeBeforeDeprecation {
                    deprecated_on: day("2027-01-02"),
                    end_of_life_on: day("2027-01-01"),
                }),
            ),
            // Moved together, both dates may pass the old ones.
            (
                &dated,
                json!({"deprecated_on": "2027-02-01", "end_of_life_on": "2027-06-01"}),
                Ok(with(&dated, |l| {
                    l.deprecated_on = Some("2027-02-01".parse().unwrap());
                    l.end_of_life_on = Some("2027-06-01".parse().unwrap());
                })),
            ),
            (&dated, json!({}), Err(LifecycleError::NothingToChange)),
            (&dated, json!({"revoke": ""}), Err(LifecycleError::EmptyRevokeReason)),
            (&dated, json!({"revoke": "  \n"}), Err(LifecycleError::EmptyRevokeReason)),
            (
                &dated,
                json!({"revoke": " CVE-2026-1234 "}),
                Ok(with(&dated, |l| {
                    l.revoked = Some(Revocation {
                        reason: "CVE-2026-1234".into(),
                        at: "2026-06-15T09:30:00Z".parse().unwrap(),
                        by: "alice".into(),
                        inherited_from: None,
                    })
                })),
            ),
        ];
        for (i, (current, body, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                apply_change(current, &change(body.clone()), ts(AT), "alice"),
                want,
                "case {i}: {body}"
            );
        }
    }

    #[test]
    fn a_revoked_version_cannot_change_any_more() {
        let revoked =
            Lifecycle { revoked: Some(revocation("CVE-9", "2026-03-01T12:00:00Z")), ..Lifecycle::default() };
        for body in [
            json!({"supported": true}),
            json!({"revoke": "again"}),
            json!({"end_of_life_on": null}),
            json!({}),
        ] {
            let err = apply_change(&revoked, &change(body.clone()), ts(AT), "alice").unwrap_err();
            assert_eq!(
                err,
                LifecycleError::AlreadyRevoked { reason: "CVE-9".into(), at: ts("2026-03-01T12:00:00Z") },
                "{body}"
            );
            assert_eq!(
                err.to_string(),
                "the version was revoked on 2026-03-01: CVE-9; a revoked version cannot change any more"
            );
        }
    }

    #[test]
    fn a_change_tells_absent_from_null() {
        let c = change(json!({"deprecated_on": null, "end_of_life_on": "2027-01-01"}));
        assert_eq!(
            c,
            LifecycleChange {
                deprecated_on: Some(None),
                end_of_life_on: Some(Some(day("2027-01-01"))),
                ..LifecycleChange::default()
            }
        );
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"deprecated_on": null, "end_of_life_on": "2027-01-01"})
        );
        assert_eq!(change(serde_json::to_value(&c).unwrap()), c);
        assert!(change(json!({})).is_empty());
        for (bad, says) in [
            (json!({"deprecate_on": "2027-01-01"}), "unknown field `deprecate_on`"),
            (json!({"end_of_life_on": "soon"}), "is not a date"),
            (json!({"supported": "yes"}), "expected a boolean"),
        ] {
            let err = serde_json::from_value::<LifecycleChange>(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_revocation_flags_descendants_naming_where_it_started() {
        let own = revocation("CVE-2026-5", "2026-04-01T08:00:00Z");
        let child = inherited(&own, "debian-minimal@1.2.0");
        assert_eq!(child, Revocation { inherited_from: Some("debian-minimal@1.2.0".into()), ..own.clone() });
        // Further down the chain, the origin stays.
        assert_eq!(inherited(&child, "web-base@3.0.0"), child);

        let live = Lifecycle {
            supported: true,
            supported_since: Some(day("2026-02-01")),
            end_of_life_on: Some(day("2027-02-01")),
            ..Lifecycle::default()
        };
        let flagged = flag_descendant(&live, &own, "debian-minimal@1.2.0").unwrap();
        assert_eq!(flagged, Lifecycle { revoked: Some(child.clone()), ..live.clone() });
        assert_eq!(flagged.state_on(day("2026-04-01")), LifecycleState::Revoked);
        // Its own revocation stays.
        let own_revoked = Lifecycle { revoked: Some(revocation("its own", "2026-01-01T00:00:00Z")), ..live };
        assert_eq!(flag_descendant(&own_revoked, &own, "debian-minimal@1.2.0"), None);
    }
}
