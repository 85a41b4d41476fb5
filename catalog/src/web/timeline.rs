//! The lifecycle timeline of a family's versions, as geometry for an inline SVG (pure: lifecycles and the
//! day in, positions out). One row per version: a bar coloured by the stage the version was in on each day
//! (candidate, supported, deprecated; revoked from its revocation on), ending at its end of life; the days
//! after today drawn lighter (planned, not yet lived); published and end-of-life marks; today a line across
//! every row; month ticks on the axis. Positions are in the SVG's viewBox units, rounded to 0.1.

use serde::Serialize;

use crate::model::{Day, Lifecycle};

/// viewBox width; rows' labels take the left part.
const WIDTH: u32 = 1000;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 985.0;
/// Tick labels, the today label and the axis above the first row.
const AXIS: u32 = 42;
const ROW: u32 = 26;
/// Below the last row.
const FOOT: u32 = 6;

/// What a row is drawn from.
#[derive(Debug, Clone, Copy)]
pub struct RowInput<'a> {
    pub label: &'a str,
    pub href: &'a str,
    pub published: Day,
    pub lifecycle: &'a Lifecycle,
}

/// A stage a bar segment shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Candidate,
    Supported,
    Deprecated,
    Revoked,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Supported => "supported",
            Self::Deprecated => "deprecated",
            Self::Revoked => "revoked",
        }
    }
}

/// One stretch of a row's bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub x: f64,
    pub width: f64,
    pub stage: Stage,
    /// After today: what the dates plan.
    pub planned: bool,
    /// `supported 2026-11-22 – 2027-05-22`.
    pub title: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkKind {
    Published,
    EndOfLife,
    Revoked,
}

/// A point event on a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub x: f64,
    pub kind: MarkKind,
    pub title: String,
}

/// One version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Top of the row.
    pub y: u32,
    /// Vertical centre of the bar.
    pub mid: u32,
    pub label: String,
    pub href: String,
    pub segments: Vec<Segment>,
    pub marks: Vec<Mark>,
}

/// An axis tick (the first day of a month).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

/// The whole chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub width: u32,
    pub height: u32,
    /// Where bars start and end (the label column is left of `left`).
    pub left: f64,
    pub right: f64,
    /// y of the axis line, of the ticks' labels and of the today label.
    pub axis_y: u32,
    pub tick_label_y: u32,
    pub today_label_y: u32,
    pub ticks: Vec<Tick>,
    pub today_x: f64,
    /// `middle`, or `end` when today is near the right edge (the label stays inside the chart).
    pub today_anchor: &'static str,
    pub today: String,
    /// First and last day the chart spans.
    pub from: String,
    pub to: String,
    pub rows: Vec<Row>,
}

fn jd(d: Day) -> i64 {
    i64::from(d.0.to_julian_day())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Day numbers of the chart's ends, and the position of a day number between them.
struct Scale {
    lo: i64,
    hi: i64,
}

impl Scale {
    fn x(&self, day: i64) -> f64 {
        let span = (self.hi - self.lo).max(1) as f64;
        round(LEFT + (day - self.lo) as f64 / span * (RIGHT - LEFT))
    }
}

/// Every day a lifecycle names, and its revocation's day.
fn dates(l: &Lifecycle) -> impl Iterator<Item = Day> + '_ {
    [l.supported_since, l.deprecated_on, l.end_of_life_on, l.revoked.as_ref().map(|r| Day::of(r.at))]
        .into_iter()
        .flatten()
}

/// The stage on `day` (a day number) of a version that is neither revoked nor past its end of life then.
fn stage_on(l: &Lifecycle, day: i64) -> Stage {
    if l.deprecated_on.is_some_and(|d| jd(d) <= day) {
        Stage::Deprecated
    } else if l.supported && l.supported_since.is_none_or(|d| jd(d) <= day) {
        Stage::Supported
    } else {
        Stage::Candidate
    }
}

fn day_of(n: i64) -> String {
    i32::try_from(n)
        .ok()
        .and_then(|n| time::Date::from_julian_day(n).ok())
        .map_or_else(|| n.to_string(), |d| Day(d).to_string())
}

fn row(i: usize, input: &RowInput<'_>, scale: &Scale, today: i64) -> Row {
    let l = input.lifecycle;
    let y = AXIS + ROW * u32::try_from(i).unwrap_or(u32::MAX / (ROW * 2));
    let published = jd(input.published);
    let revoked = l.revoked.as_ref().map(|r| jd(Day::of(r.at)).max(published));
    let eol = l.end_of_life_on.map(jd).map(|d| d.max(published));
    // The lived (or planned) life: from publication to revocation or end of life, else the chart's end.
    let stop = [revoked, eol].into_iter().flatten().min().unwrap_or(scale.hi);
    let mut cuts: Vec<i64> = vec![published, stop, today + 1];
    cuts.extend(dates(l).map(jd));
    cuts.retain(|&d| d >= published && d <= stop);
    cuts.sort_unstable();
    cuts.dedup();
    let mut segments: Vec<(i64, i64, Stage, bool)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (stage, planned) = (stage_on(l, a), a > today);
        match segments.last_mut() {
            Some(last) if last.1 == a && last.2 == stage && last.3 == planned => last.1 = b,
            _ => segments.push((a, b, stage, planned)),
        }
    }
    if let Some(r) = revoked {
        let end = scale.hi.max(r);
        if r <= today {
            segments.push((r, (today + 1).min(end), Stage::Revoked, false));
        }
        if end > today + 1 {
            segments.push(((today + 1).max(r), end, Stage::Revoked, true));
        }
    }
    let segments = segments
        .into_iter()
        .filter(|(a, b, ..)| b > a)
        .map(|(a, b, stage, planned)| {
            let open = b == scale.hi && Some(b) != eol && stage != Stage::Revoked;
            let until = if open { "(no end date)".to_owned() } else { day_of(b - 1) };
            Segment {
                x: scale.x(a),
                width: round(scale.x(b) - scale.x(a)),
                stage,
                planned,
                title: format!(
                    "{}: {} {} – {until}{}",
                    input.label,
                    stage.name(),
                    day_of(a),
                    if planned { " (planned)" } else { "" }
                ),
            }
        })
        .collect();
    let mut marks = vec![Mark {
        x: scale.x(published),
        kind: MarkKind::Published,
        title: format!("{} published {}", input.label, input.published),
    }];
    if let (Some(d), None) = (l.end_of_life_on, revoked.filter(|r| eol.is_some_and(|e| *r < e))) {
        marks.push(Mark {
            x: scale.x(jd(d).max(published)),
            kind: MarkKind::EndOfLife,
            title: format!("{} end of life {d}", input.label),
        });
    }
    if let (Some(r), Some(rv)) = (revoked, &l.revoked) {
        marks.push(Mark {
            x: scale.x(r),
            kind: MarkKind::Revoked,
            title: format!("{} revoked {}: {}", input.label, Day::of(rv.at), rv.reason),
        });
    }
    Row { y, mid: y + ROW / 2, label: input.label.to_owned(), href: input.href.to_owned(), segments, marks }
}

/// Month ticks between `lo` and `hi`: every 1, 2, 3, 6, 12 or 24 months, whichever gives at most 9.
fn ticks(scale: &Scale) -> Vec<Tick> {
    let (Ok(lo), Ok(hi)) = (i32::try_from(scale.lo), i32::try_from(scale.hi)) else { return Vec::new() };
    let (Ok(lo), Ok(hi)) = (time::Date::from_julian_day(lo), time::Date::from_julian_day(hi)) else {
        return Vec::new();
    };
    let month_index = |d: time::Date| i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1;
    let (first, last) = (month_index(lo) + 1, month_index(hi));
    let months = (last - first + 1).max(1);
    let step = [1, 2, 3, 6, 12, 24, 60, 120].into_iter().find(|s| months / s <= 8).unwrap_or(240);
    let mut out = Vec::new();
    let mut m = first + (step - first.rem_euclid(step)) % step;
    while m <= last {
        let (year, month) = (m.div_euclid(12), m.rem_euclid(12) + 1);
        let date = i32::try_from(year)
            .ok()
            .zip(u8::try_from(month).ok().and_then(|m| time::Month::try_from(m).ok()))
            .and_then(|(y, mo)| time::Date::from_calendar_date(y, mo, 1).ok());
        // A label centred on a tick near the right edge would be cut.
        if let Some(d) = date.filter(|d| scale.x(i64::from(d.to_julian_day())) <= f64::from(WIDTH) - 26.0) {
            let label = if step >= 12 { format!("{year}") } else { format!("{year}-{month:02}") };
            out.push(Tick { x: scale.x(i64::from(d.to_julian_day())), label });
        }
        m += step;
    }
    out
}

/// The chart of `rows` (drawn top to bottom in the order given) on `today`.
pub fn timeline(rows: &[RowInput<'_>], today: Day) -> Timeline {
    let t = jd(today);
    let first = rows.iter().map(|r| jd(r.published)).min().unwrap_or(t).min(t);
    let last = rows
        .iter()
        .flat_map(|r| dates(r.lifecycle).map(jd).chain([jd(r.published)]))
        .max()
        .unwrap_or(t)
        .max(t);
    // Some room on both sides: open-ended bars run into the right margin.
    let pad = ((last - first) / 12).max(14);
    let scale = Scale { lo: first - pad / 2, hi: last + pad };
    let rows: Vec<Row> = rows.iter().enumerate().map(|(i, r)| row(i, r, &scale, t)).collect();
    // The middle of today (bars split at its end).
    let today_x = round((scale.x(t) + scale.x(t + 1)) / 2.0);
    let n = u32::try_from(rows.len()).unwrap_or(u32::MAX / (ROW * 2));
    Timeline {
        width: WIDTH,
        height: AXIS + ROW * n.max(1) + FOOT,
        left: LEFT,
        right: RIGHT,
        axis_y: AXIS - 6,
        tick_label_y: 14,
        today_label_y: AXIS - 12,
        ticks: ticks(&scale),
        today_x,
        today_anchor: if today_x > RIGHT - 60.0 { "end" } else { "middle" },
        today: today.to_string(),
        from: day_of(scale.lo),
        to: day_of(scale.hi),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Revocation, Timestamp};

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn life(supported: Option<&str>, deprecated: Option<&str>, eol: Option<&str>) -> Lifecycle {
        Lifecycle {
            supported: supported.is_some(),
            supported_since: supported.map(day),
            deprecated_on: deprecated.map(day),
            end_of_life_on: eol.map(day),
            revoked: None,
        }
    }

    fn stages(r: &Row) -> Vec<(Stage, bool)> {
        r.segments.iter().map(|s| (s.stage, s.planned)).collect()
    }

    #[test]
    fn a_bar_follows_the_stages_and_splits_at_today() {
        let l = life(Some("2026-03-01"), Some("2026-09-01"), Some("2027-01-01"));
        let input = RowInput { label: "1.0.0", href: "/x", published: day("2026-01-01"), lifecycle: &l };
        let t = timeline(&[input], day("2026-10-01"));
        let r = &t.rows[0];
        assert_eq!(
            stages(r),
            [
                (Stage::Candidate, false),
                (Stage::Supported, false),
                (Stage::Deprecated, false),
                (Stage::Deprecated, true)
            ]
        );
        // Contiguous, left to right, ending at the end of life mark.
        for w in r.segments.windows(2) {
            assert!((w[0].x + w[0].width - w[1].x).abs() < 0.25, "{w:?}");
        }
        let last = r.segments.last().unwrap();
        let eol = r.marks.iter().find(|m| m.kind == MarkKind::EndOfLife).unwrap();
        assert!((last.x + last.width - eol.x).abs() < 0.25, "{last:?} {eol:?}");
        assert!(r.segments[0].title.contains("candidate 2026-01-01 – 2026-02-28"), "{:?}", r.segments[0]);
        assert!(r.segments[0].x < t.today_x && t.today_x < eol.x);
        assert!(t.left <= r.segments[0].x && eol.x <= t.right);
    }

    #[test]
    fn an_open_life_runs_to_the_edge_and_a_revocation_ends_it() {
        let open = life(Some("2026-05-01"), None, None);
        let mut revoked = life(None, None, Some("2027-05-01"));
        revoked.revoked = Some(Revocation {
            reason: "CVE-2026-1".into(),
            at: "2026-06-01T10:00:00Z".parse::<Timestamp>().unwrap(),
            by: "token:ops".into(),
            inherited_from: None,
        });
        let rows = [
            RowInput { label: "1.1.0", href: "/b", published: day("2026-05-01"), lifecycle: &open },
            RowInput { label: "1.0.0", href: "/a", published: day("2026-04-01"), lifecycle: &revoked },
        ];
        let t = timeline(&rows, day("2026-07-01"));
        let last = t.rows[0].segments.last().unwrap();
        assert_eq!((last.stage, last.planned), (Stage::Supported, true));
        assert_eq!(last.x + last.width, t.right);
        assert!(last.title.ends_with("(no end date) (planned)"), "{last:?}");
        let r = &t.rows[1];
        assert_eq!(stages(r), [(Stage::Candidate, false), (Stage::Revoked, false), (Stage::Revoked, true)]);
        assert!(r.marks.iter().any(|m| m.kind == MarkKind::Revoked && m.title.contains("CVE-2026-1")));
        assert!(!r.marks.iter().any(|m| m.kind == MarkKind::EndOfLife), "revoked before its end of life");
        assert!(t.rows[1].y > t.rows[0].y && t.height > t.rows[1].y);
    }

    #[test]
    fn ticks_are_months_in_range_and_thin_out_over_years() {
        let l = life(None, None, None);
        let short = timeline(
            &[RowInput { label: "1", href: "/", published: day("2026-01-10"), lifecycle: &l }],
            day("2026-04-20"),
        );
        let labels: Vec<_> = short.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["2026-02", "2026-03", "2026-04", "2026-05"]);
        assert!(short.ticks.windows(2).all(|w| w[0].x < w[1].x));
        let long = timeline(
            &[RowInput { label: "1", href: "/", published: day("2020-01-10"), lifecycle: &l }],
            day("2026-04-20"),
        );
        assert!(long.ticks.len() <= 9 && long.ticks.len() >= 4, "{:?}", long.ticks);
        assert!(long.ticks.iter().all(|t| t.label.len() == 4), "{:?}", long.ticks);
    }
}
