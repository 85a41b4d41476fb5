//! The resolver: "the newest supported image of a family certified for `base-os@^1`".
//!
//! [`resolve`] walks a family's versions from the newest down and stops at the first one that answers the
//! request: certified for every requested contract range, in the requested channel's history, not in a
//! lifecycle state the request leaves out on `today`, and still supported on `supported_until`. Every newer
//! version it passes over is listed with every reason that applies (up to [`ResolveRequest::limit`], the
//! rest counted), so a consumer sees why the answer is not newer. `kiln resolve` and
//! `GET /api/v1/resolve` both call it; the [`Resolution`] serializes as the API's JSON and displays for
//! humans.
//!
//! Pure: "today" is an input, nothing is read. A walk allocates nothing for a version it accepts and only
//! counts the reasons of versions beyond the listed ones, so a 10,000-version family with nothing matching
//! still answers quickly with a bounded answer.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    str::FromStr,
};

use serde::{
    de::{self, SeqAccess, Visitor},
    ser::SerializeMap,
    Deserialize, Deserializer, Serialize, Serializer,
};

use crate::model::{
    Channel, ContractId, ContractRequest, Day, FamilyState, Lifecycle, LifecycleState, Timestamp,
    VersionRecord,
};

/// How many passed-over versions an answer lists when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// A lifecycle state the resolver leaves out unless a request includes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncludeState {
    Deprecated,
    EndOfLife,
    Revoked,
}

impl IncludeState {
    pub const ALL: [IncludeState; 3] = [Self::Deprecated, Self::EndOfLife, Self::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deprecated => "deprecated",
            Self::EndOfLife => "end-of-life",
            Self::Revoked => "revoked",
        }
    }

    /// The lifecycle state this includes.
    pub fn state(self) -> LifecycleState {
        match self {
            Self::Deprecated => LifecycleState::Deprecated,
            Self::EndOfLife => LifecycleState::EndOfLife,
            Self::Revoked => LifecycleState::Revoked,
        }
    }
}

impl fmt::Display for IncludeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncludeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!(
                "`{s}` cannot be included: candidate and supported versions always are; \
                 the others are deprecated, end-of-life, revoked"
            )
        })
    }
}

/// What a consumer asks for. The HTTP layer parses the query (`contract=base-os@^1&contract=ssh-server@^1
/// &channel=stable&supported_until=2027-06-01&include=deprecated,end-of-life&limit=20`) into it, and the
/// answer echoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// Contract ranges the answer must be certified for, every one of them (`base-os@^1`). A single string
    /// or a list.
    #[serde(rename = "contract", alias = "contracts", default, deserialize_with = "contract_requests")]
    pub contracts: Vec<ContractRequest>,
    /// The answer must be a version this channel has pointed at, now or before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The answer must still be supported on this day: neither deprecated nor end of life by then, and not
    /// revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_until: Option<Day>,
    /// States accepted on top of candidate and supported. A comma-separated string or a list.
    #[serde(default, deserialize_with = "include_states", skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<IncludeState>,
    /// At most this many passed-over versions are listed; the rest are counted.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

impl Default for ResolveRequest {
    fn default() -> Self {
        Self {
            contracts: Vec::new(),
            channel: None,
            supported_until: None,
            include: Vec::new(),
            limit: DEFAULT_LIMIT,
        }
    }
}

impl ResolveRequest {
    /// Whether versions in `state` (on the day of the request) may be the answer.
    pub fn includes(&self, state: LifecycleState) -> bool {
        match state {
            LifecycleState::Candidate | LifecycleState::Supported => true,
            _ => self.include.iter().any(|i| i.state() == state),
        }
    }
}

impl fmt::Display for ResolveRequest {
    /// `base-os@^1, ssh-server@^1 in channel stable, supported until 2027-06-01, including deprecated`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.contracts.is_empty() {
            f.write_str("any contract")?;
        }
        for (i, c) in self.contracts.iter().enumerate() {
            write!(f, "{}{c}", if i == 0 { "" } else { ", " })?;
        }
        if let Some(ch) = &self.channel {
            write!(f, " in channel {ch}")?;
        }
        if let Some(d) = self.supported_until {
            write!(f, ", supported until {d}")?;
        }
        if !self.include.is_empty() {
            let states: Vec<&str> = self.include.iter().map(|i| i.as_str()).collect();
            write!(f, ", including {}", states.join(", "))?;
        }
        Ok(())
    }
}

/// What kind of reason passed a version over: the keys of [`Resolution::reason_counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonKind {
    MissingContract,
    NotInChannel,
    Deprecated,
    EndOfLife,
    Revoked,
    DeprecatedBefore,
    EndOfLifeBefore,
}

impl ReasonKind {
    pub const ALL: [ReasonKind; 7] = [
        Self::MissingContract,
        Self::NotInChannel,
        Self::Deprecated,
        Self::EndOfLife,
        Self::Revoked,
        Self::DeprecatedBefore,
        Self::EndOfLifeBefore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingContract => "missing-contract",
            Self::NotInChannel => "not-in-channel",
            Self::Deprecated => "deprecated",
            Self::EndOfLife => "end-of-life",
            Self::Revoked => "revoked",
            Self::DeprecatedBefore => "deprecated-before",
            Self::EndOfLifeBefore => "end-of-life-before",
        }
    }
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one version is not the answer. Serialized as `{"kind": "...", "message": "...", ...facts}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// Not certified for this requested range; `certified` is everything it is certified for.
    MissingContract {
        #[serde(deserialize_with = "contract_request")]
        request: ContractRequest,
        certified: Vec<ContractId>,
    },
    /// The requested channel never pointed at it.
    NotInChannel { channel: String },
    /// Deprecated on the day of the request (and deprecated versions were not included).
    Deprecated { since: Day },
    /// End of life on the day of the request (and end-of-life versions were not included).
    EndOfLife { since: Day },
    /// Revoked (and revoked versions were not included, or the request asks for support until a day).
    Revoked {
        at: Timestamp,
        reason: String,
        #[serde(default)]
        inherited_from: Option<String>,
    },
    /// Deprecated on `on`, not after the day it must still be supported on.
    DeprecatedBefore { on: Day, supported_until: Day },
    /// End of life on `on`, not after the day it must still be supported on.
    EndOfLifeBefore { on: Day, supported_until: Day },
}

impl Reason {
    pub fn kind(&self) -> ReasonKind {
        match self {
            Self::MissingContract { .. } => ReasonKind::MissingContract,
            Self::NotInChannel { .. } => ReasonKind::NotInChannel,
            Self::Deprecated { .. } => ReasonKind::Deprecated,
            Self::EndOfLife { .. } => ReasonKind::EndOfLife,
            Self::Revoked { .. } => ReasonKind::Revoked,
            Self::DeprecatedBefore { .. } => ReasonKind::DeprecatedBefore,
            Self::EndOfLifeBefore { .. } => ReasonKind::EndOfLifeBefore,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingContract { request, certified } => {
                write!(f, "not certified for {request} (certified for ")?;
                if certified.is_empty() {
                    f.write_str("no contract")?;
                }
                for (i, c) in certified.iter().enumerate() {
                    write!(f, "{}{c}", if i == 0 { "" } else { ", " })?;
                }
                f.write_str(")")
            }
            Self::NotInChannel { channel } => write!(f, "never in channel {channel}"),
            Self::Deprecated { since } => write!(f, "deprecated since {since}"),
            Self::EndOfLife { since } => write!(f, "end of life since {since}"),
            Self::Revoked { at, reason, inherited_from } => {
                write!(f, "revoked on {}: {reason}", Day::of(*at))?;
                match inherited_from {
                    Some(a) => write!(f, " (inherited from {a})"),
                    None => Ok(()),
                }
            }
            Self::DeprecatedBefore { on, supported_until } => {
                write!(f, "deprecated on {on}, so not supported until {supported_until}")
            }
            Self::EndOfLifeBefore { on, supported_until } => {
                write!(f, "end of life on {on}, so not supported until {supported_until}")
            }
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", &self.kind())?;
        m.serialize_entry("message", &self.to_string())?;
        match self {
            Self::MissingContract { request, certified } => {
                m.serialize_entry("request", request)?;
                m.serialize_entry("certified", certified)?;
            }
            Self::NotInChannel { channel } => m.serialize_entry("channel", channel)?,
            Self::Deprecated { since } | Self::EndOfLife { since } => m.serialize_entry("since", since)?,
            Self::Revoked { at, reason, inherited_from } => {
                m.serialize_entry("at", at)?;
                m.serialize_entry("reason", reason)?;
                if let Some(a) = inherited_from {
                    m.serialize_entry("inherited_from", a)?;
                }
            }
            Self::DeprecatedBefore { on, supported_until }
            | Self::EndOfLifeBefore { on, supported_until } => {
                m.serialize_entry("on", on)?;
                m.serialize_entry("supported_until", supported_until)?;
            }
        }
        m.end()
    }
}

/// A newer version the resolver did not choose, with every reason why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedOver {
    pub version: semver::Version,
    pub reasons: Vec<Reason>,
}

/// The version a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    pub version: semver::Version,
    /// `sha256:…` of its signed `manifest.json`.
    pub manifest_digest: String,
    /// Its OCI image manifest's digest, when it has an OCI image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Its state on the day of the request.
    pub state: LifecycleState,
    /// Its lifecycle dates (and revocation, when revoked versions were included).
    pub lifecycle: Lifecycle,
    /// Every contract it is certified for.
    pub certified: Vec<ContractId>,
}

/// The answer to a [`ResolveRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub family: String,
    /// The request, as understood.
    pub request: ResolveRequest,
    /// The day lifecycle states were taken on.
    pub today: Day,
    /// The newest version answering the request; `None` when no version does.
    pub chosen: Option<Chosen>,
    /// Every newer version that was passed over (every version when nothing was chosen), newest first, at
    /// most `request.limit` of them.
    pub passed_over: Vec<PassedOver>,
    /// How many more versions were passed over than are listed.
    pub omitted: usize,
    /// How many passed-over versions (listed or omitted) each kind of reason applied to.
    pub reason_counts: BTreeMap<ReasonKind, usize>,
}

impl Resolution {
    /// How many versions were passed over in all.
    pub fn passed_over_total(&self) -> usize {
        self.passed_over.len() + self.omitted
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chosen {
            Some(c) => {
                writeln!(f, "{}@{} ({} on {})", self.family, c.version, c.state, self.today)?;
                writeln!(f, "  manifest {}", c.manifest_digest)?;
                if let Some(d) = &c.image_digest {
                    writeln!(f, "  image    {d}")?;
                }
            }
            None => writeln!(f, "{}: no version answers {} on {}", self.family, self.request, self.today)?,
        }
        if self.passed_over_total() == 0 {
            return Ok(());
        }
        let what = if self.chosen.is_some() { "newer versions passed over" } else { "versions passed over" };
        writeln!(f, "  {} {what}:", self.passed_over_total())?;
        for p in &self.passed_over {
            let reasons: Vec<String> = p.reasons.iter().map(ToString::to_string).collect();
            writeln!(f, "    {}: {}", p.version, reasons.join("; "))?;
        }
        if self.omitted > 0 {
            let counts: Vec<String> = self.reason_counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(f, "    … and {} more (reasons over all: {})", self.omitted, counts.join(", "))?;
        }
        Ok(())
    }
}

/// Why a request cannot be answered at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "family {family} has no channel `{channel}` ({})",
        if known.is_empty() { "it has no channels".to_owned() } else { format!("its channels: {}", known.join(", ")) }
    )]
    UnknownChannel { family: String, channel: String, known: Vec<String> },
}

/// The newest version of `family` answering `req` on `today`, and why every newer one was passed over.
pub fn resolve(family: &FamilyState, req: &ResolveRequest, today: Day) -> Result<Resolution, ResolveError> {
    let channel = match &req.channel {
        None => None,
        Some(name) => Some(family.channels.get(name).ok_or_else(|| ResolveError::UnknownChannel {
            family: family.name.clone(),
            channel: name.clone(),
            known: family.channels.keys().cloned().collect(),
        })?),
    };
    let mut walk = Walk { req, today, history: channel.map(History::new) };

    let mut chosen = None;
    let mut passed_over = Vec::new();
    let mut omitted = 0;
    let mut counts = [0usize; ReasonKind::ALL.len()];
    for v in family.versions.iter().rev() {
        let listed = passed_over.len() < req.limit;
        let mut reasons = Vec::new();
        // The kinds that applied to this version: each counts once per version.
        let mut kinds = 0u8;
        walk.misses(v, |m| {
            let kind = m.kind();
            kinds |= 1 << kind as u8;
            if listed {
                reasons.push(m.reason(v, req));
            }
        });
        let missed = kinds != 0;
        for (i, n) in counts.iter_mut().enumerate() {
            *n += usize::from(kinds >> i & 1);
        }
        if !missed {
            chosen = Some(Chosen {
                version: v.version.clone(),
                manifest_digest: v.manifest_digest.clone(),
                image_digest: v.image_digest.clone(),
                state: v.lifecycle.state_on(today),
                lifecycle: v.lifecycle.clone(),
                certified: v.certified.clone(),
            });
            break;
        }
        if listed {
            passed_over.push(PassedOver { version: v.version.clone(), reasons });
        } else {
            omitted += 1;
        }
    }
    let reason_counts =
        ReasonKind::ALL.into_iter().zip(counts).filter(|(_, n)| *n > 0).collect::<BTreeMap<_, _>>();
    Ok(Resolution {
        family: family.name.clone(),
        request: req.clone(),
        today,
        chosen,
        passed_over,
        omitted,
        reason_counts,
    })
}

/// One request walking one family's versions.
struct Walk<'a> {
    req: &'a ResolveRequest,
    today: Day,
    history: Option<History<'a>>,
}

impl Walk<'_> {
    /// Calls `miss` for every reason `v` is not the answer, in the order they are listed; never for the
    /// answer. Allocates nothing.
    fn misses<'v>(&mut self, v: &'v VersionRecord, mut miss: impl FnMut(Miss<'v>)) {
        for (i, c) in self.req.contracts.iter().enumerate() {
            if !v.certifies(c) {
                miss(Miss::Contract(i));
            }
        }
        if let Some(h) = &mut self.history {
            if !h.had(&v.version) {
                miss(Miss::Channel);
            }
        }
        let l = &v.lifecycle;
        if let Some(r) = &l.revoked {
            // Never "supported until" anything, included or not.
            if !self.req.includes(LifecycleState::Revoked) || self.req.supported_until.is_some() {
                miss(Miss::Revoked(r));
            }
        } else {
            match (l.state_on(self.today), l.deprecated_on, l.end_of_life_on) {
                (LifecycleState::EndOfLife, _, Some(d)) if !self.req.includes(LifecycleState::EndOfLife) => {
                    miss(Miss::EndOfLife(d));
                }
                (LifecycleState::Deprecated, Some(d), _)
                    if !self.req.includes(LifecycleState::Deprecated) =>
                {
                    miss(Miss::Deprecated(d));
                }
                _ => {}
            }
        }
        if let Some(until) = self.req.supported_until {
            if let Some(d) = l.deprecated_on.filter(|d| *d <= until) {
                miss(Miss::DeprecatedBefore(d, until));
            }
            if let Some(d) = l.end_of_life_on.filter(|d| *d <= until) {
                miss(Miss::EndOfLifeBefore(d, until));
            }
        }
    }
}

/// A reason found during the walk, before (and unless) it is listed: borrowed, copied, never allocated.
#[derive(Debug, Clone, Copy)]
enum Miss<'v> {
    /// Index into the request's contracts.
    Contract(usize),
    Channel,
    Deprecated(Day),
    EndOfLife(Day),
    Revoked(&'v crate::model::Revocation),
    DeprecatedBefore(Day, Day),
    EndOfLifeBefore(Day, Day),
}

impl Miss<'_> {
    fn kind(self) -> ReasonKind {
        match self {
            Self::Contract(_) => ReasonKind::MissingContract,
            Self::Channel => ReasonKind::NotInChannel,
            Self::Deprecated(_) => ReasonKind::Deprecated,
            Self::EndOfLife(_) => ReasonKind::EndOfLife,
            Self::Revoked(_) => ReasonKind::Revoked,
            Self::DeprecatedBefore(..) => ReasonKind::DeprecatedBefore,
            Self::EndOfLifeBefore(..) => ReasonKind::EndOfLifeBefore,
        }
    }

    fn reason(self, v: &VersionRecord, req: &ResolveRequest) -> Reason {
        match self {
            Self::Contract(i) => {
                Reason::MissingContract { request: req.contracts[i].clone(), certified: v.certified.clone() }
            }
            Self::Channel => Reason::NotInChannel { channel: req.channel.clone().unwrap_or_default() },
            Self::Deprecated(since) => Reason::Deprecated { since },
            Self::EndOfLife(since) => Reason::EndOfLife { since },
            Self::Revoked(r) => Reason::Revoked {
                at: r.at,
                reason: r.reason.clone(),
                inherited_from: r.inherited_from.clone(),
            },
            Self::DeprecatedBefore(on, supported_until) => Reason::DeprecatedBefore { on, supported_until },
            Self::EndOfLifeBefore(on, supported_until) => Reason::EndOfLifeBefore { on, supported_until },
        }
    }
}

/// "Did the channel ever point at this version?", asked once per version walked: a scan of the channel's
/// moves while that stays cheap, a set of its versions once a walk has scanned more than
/// [`History::SCAN_BUDGET`] moves (a long walk over a long history stays linear).
struct History<'a> {
    channel: &'a Channel,
    scanned: usize,
    set: Option<HashSet<&'a semver::Version>>,
}

impl<'a> History<'a> {
    const SCAN_BUDGET: usize = 4096;

    fn new(channel: &'a Channel) -> Self {
        Self { channel, scanned: 0, set: None }
    }

    fn had(&mut self, v: &semver::Version) -> bool {
        if self.set.is_none() {
            self.scanned += self.channel.history.len();
            if self.scanned <= Self::SCAN_BUDGET {
                return self.channel.ever_had(v);
            }
            self.set = Some(self.channel.history.iter().map(|m| &m.to).collect());
        }
        self.set.as_ref().is_some_and(|s| s.contains(v))
    }
}

/// Strings given as one string or a list of them (a query parameter given once or repeated, JSON).
struct Strings;

impl<'de> Visitor<'de> for Strings {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(vec![s.to_owned()])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(s) = seq.next_element::<String>()? {
            out.push(s);
        }
        Ok(out)
    }
}

fn contract_requests<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ContractRequest>, D::Error> {
    // No splitting on commas: a range may hold one (`web-server@>=1.2, <2`).
    d.deserialize_any(Strings)?.iter().map(|s| s.parse().map_err(de::Error::custom)).collect()
}

fn contract_request<'de, D: Deserializer<'de>>(d: D) -> Result<ContractRequest, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

fn include_states<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IncludeState>, D::Error> {
    let mut out = Vec::new();
    for s in d.deserialize_any(Strings)? {
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let state: IncludeState = part.parse().map_err(de::Error::custom)?;
            if !out.contains(&state) {
                out.push(state);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Test families, built in a few lines.
#[cfg(test)]
pub(crate) mod testing {
    use crate::model::{
        Channel, ChannelMove, Day, FamilyState, Lifecycle, LifecyclePolicy, Revocation, Timestamp,
        VersionRecord,
    };

    pub(crate) fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    pub(crate) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn ver(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    pub(crate) fn revocation(reason: &str, at: &str) -> Revocation {
        Revocation { reason: reason.into(), at: ts(at), by: "security".into(), inherited_from: None }
    }

    /// A family under construction: versions in any order (sorted by [`FamilyBuilder::build`]).
    pub(crate) struct FamilyBuilder {
        family: FamilyState,
    }

    impl FamilyBuilder {
        pub(crate) fn new(name: &str) -> Self {
            Self { family: FamilyState { name: name.into(), ..FamilyState::default() } }
        }

        /// Goes on building `family`.
        pub(crate) fn from_family(family: FamilyState) -> Self {
            Self { family }
        }

        /// Adds `version`, certified for `certified` (`base-os@1.0.0`), a candidate.
        pub(crate) fn version(mut self, version: &str, certified: &[&str]) -> Self {
            let mut certified: Vec<_> = certified.iter().map(|c| c.parse().unwrap()).collect();
            certified.sort();
            self.family.versions.push(VersionRecord {
                family: self.family.name.clone(),
                version: ver(version),
                manifest_digest: format!("sha256:manifest-of-{version}"),
                image_digest: Some(format!("sha256:image-of-{version}")),
                published_at: ts("2026-01-01T00:00:00Z"),
                published_by: "ci".into(),
                signed_by: "SHA256:key".into(),
                parent: None,
                claimed: Vec::new(),
                certified,
                artifacts: Vec::new(),
                files: Vec::new(),
                policy: LifecyclePolicy::default(),
                lifecycle: Lifecycle::default(),
            });
            self
        }

        /// Edits the record of `version` (added before).
        pub(crate) fn edit(mut self, version: &str, f: impl FnOnce(&mut VersionRecord)) -> Self {
            let v = ver(version);
            f(self.family.versions.iter_mut().find(|r| r.version == v).expect("version added before"));
            self
        }

        pub(crate) fn lifecycle(self, version: &str, f: impl FnOnce(&mut Lifecycle)) -> Self {
            self.edit(version, |r| f(&mut r.lifecycle))
        }

        pub(crate) fn deprecated_on(self, version: &str, on: &str) -> Self {
            self.lifecycle(version, |l| l.deprecated_on = Some(day(on)))
        }

        pub(crate) fn end_of_life_on(self, version: &str, on: &str) -> Self {
            self.lifecycle(version, |l| l.end_of_life_on = Some(day(on)))
        }

        pub(crate) fn revoked(self, version: &str, reason: &str) -> Self {
            self.lifecycle(version, |l| l.revoked = Some(revocation(reason, "2026-03-01T12:00:00Z")))
        }

        pub(crate) fn policy(self, version: &str, policy: LifecyclePolicy) -> Self {
            self.edit(version, |r| r.policy = policy)
        }

        /// A channel that moved to each of `moves` in turn, one day apart; it points at the last.
        pub(crate) fn channel(mut self, name: &str, moves: &[&str]) -> Self {
            let history: Vec<ChannelMove> = moves
                .iter()
                .enumerate()
                .map(|(i, to)| ChannelMove {
                    at: Timestamp(1_767_225_600 + 86_400 * i as i64),
                    by: "release".into(),
                    from: i.checked_sub(1).map(|p| ver(moves[p])),
                    to: ver(to),
                })
                .collect();
            let version = history.last().expect("a channel moved at least once").to.clone();
            self.family.channels.insert(name.into(), Channel { name: name.into(), version, history });
            self
        }

        pub(crate) fn build(mut self) -> FamilyState {
            self.family.versions.sort_by(|a, b| a.version.cmp(&b.version));
            self.family.revision = self.family.versions.len() as u64;
            self.family
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{testing::*, *};
    use crate::model::Revocation;

    fn request(contracts: &[&str]) -> ResolveRequest {
        ResolveRequest {
            contracts: contracts.iter().map(|c| c.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn chosen(r: &Resolution) -> Option<String> {
        r.chosen.as_ref().map(|c| c.version.to_string())
    }

    /// `version: kind, kind` per passed-over version, newest first.
    fn passed(r: &Resolution) -> Vec<String> {
        r.passed_over
            .iter()
            .map(|p| {
                let kinds: Vec<&str> = p.reasons.iter().map(|x| x.kind().as_str()).collect();
                format!("{}: {}", p.version, kinds.join(", "))
            })
            .collect()
    }

    const TODAY: &str = "2026-06-15";

    fn run(f: &FamilyState, req: &ResolveRequest) -> Resolution {
        resolve(f, req, day(TODAY)).unwrap()
    }

    /// base-os 1.0 on 1.0.0, ssh-server too from 1.1.0, base-os 1.2 on 1.2.0, base-os 2.0 on 2.0.0 and 1.10.0
    /// newest of the 1.x line (semver, not text order).
    fn contracts_family() -> FamilyState {
        FamilyBuilder::new("debian-minimal")
            .version("2.0.0", &["base-os@2.0.0", "ssh-server@1.0.0"])
            .version("1.0.0", &["base-os@1.0.0"])
            .version("1.1.0", &["base-os@1.0.0", "ssh-server@1.0.0"])
            .version("1.2.0", &["base-os@1.2.0"])
            .version("1.10.0", &["base-os@1.2.0", "ssh-server@2.0.0"])
            .build()
    }

    #[test]
    fn the_newest_version_certified_for_every_requested_range_is_chosen() {
        let f = contracts_family();
        let cases: &[(&[&str], Option<&str>, &[&str])] = &[
            (&["base-os@^1"], Some("1.10.0"), &["2.0.0: missing-contract"]),
            (&["base-os@2.x"], Some("2.0.0"), &[]),
            (&["base-os@^1.2"], Some("1.10.0"), &["2.0.0: missing-contract"]),
            (
                &["base-os@~1.0"],
                Some("1.1.0"),
                &["2.0.0: missing-contract", "1.10.0: missing-contract", "1.2.0: missing-contract"],
            ),
            (
                &["base-os@^1", "ssh-server@^1"],
                Some("1.1.0"),
                &["2.0.0: missing-contract", "1.10.0: missing-contract", "1.2.0: missing-contract"],
            ),
            (&["ssh-server@^2"], Some("1.10.0"), &["2.0.0: missing-contract"]),
            (&[], Some("2.0.0"), &[]),
            (
                &["base-os@^3"],
                None,
                &[
                    "2.0.0: missing-contract",
                    "1.10.0: missing-contract",
                    "1.2.0: missing-contract",
                    "1.1.0: missing-contract",
                    "1.0.0: missing-contract",
                ],
            ),
        ];
        for (contracts, want, want_passed) in cases {
            let r = run(&f, &request(contracts));
            assert_eq!(chosen(&r).as_deref(), *want, "{contracts:?}");
            assert_eq!(passed(&r), *want_passed, "{contracts:?}");
        }
    }

    #[test]
    fn a_missing_contract_names_the_request_and_what_the_version_is_certified_for() {
        let f = contracts_family();
        let r = run(&f, &request(&["base-os@^1", "ssh-server@^1", "web-server@^1"]));
        assert_eq!(chosen(&r), None);
        // Every reason that applies, not only the first.
        let newest = &r.passed_over[0];
        assert_eq!(newest.version, ver("2.0.0"));
        assert_eq!(
            newest.reasons,
            vec![
                Reason::MissingContract {
                    request: "base-os@^1".parse().unwrap(),
                    certified: vec!["base-os@2.0.0".parse().unwrap(), "ssh-server@1.0.0".parse().unwrap()],
                },
                Reason::MissingContract {
                    request: "web-server@^1".parse().unwrap(),
                    certified: vec!["base-os@2.0.0".parse().unwrap(), "ssh-server@1.0.0".parse().unwrap()],
                },
            ]
        );
        assert_eq!(
            newest.reasons[0].to_string(),
            "not certified for base-os@^1 (certified for base-os@2.0.0, ssh-server@1.0.0)"
        );
        let bare = FamilyBuilder::new("f").version("1.0.0", &[]).build();
        let r = run(&bare, &request(&["base-os@^1"]));
        assert_eq!(
            r.passed_over[0].reasons[0].to_string(),
            "not certified for base-os@^1 (certified for no contract)"
        );
        // 1.1.0 is certified for both of the first two, only the third is missing.
        let r = run(&f, &request(&["base-os@^1", "ssh-server@^1", "web-server@^1"]));
        let v110 = r.passed_over.iter().find(|p| p.version == ver("1.1.0")).unwrap();
        assert_eq!(v110.reasons.len(), 1);
        assert!(v110.reasons[0].to_string().starts_with("not certified for web-server@^1 "));
        // Counted per version: 2.0.0 misses two requests, every version misses web-server.
        assert_eq!(r.passed_over[0].reasons.len(), 2);
        assert_eq!(r.reason_counts, BTreeMap::from([(ReasonKind::MissingContract, 5)]));
    }

    #[test]
    fn a_channel_keeps_every_version_it_ever_pointed_at() {
        // stable went 1.0.0 → 1.1.0 → 1.2.0 and back to 1.1.0 when 1.2.0 was revoked; 1.3.0 never was stable.
        let f = FamilyBuilder::new("debian-minimal")
            .version("1.0.0", &["base-os@1.0.0"])
            .version("1.1.0", &["base-os@1.0.0"])
            .version("1.2.0", &["base-os@1.0.0"])
            .version("1.3.0", &["base-os@1.0.0"])
            .revoked("1.2.0", "CVE-2026-0001")
            .channel("stable", &["1.0.0", "1.1.0", "1.2.0", "1.1.0"])
            .channel("candidate", &["1.3.0"])
            .build();
        let stable = ResolveRequest { channel: Some("stable".into()), ..request(&["base-os@^1"]) };
        let r = run(&f, &stable);
        assert_eq!(chosen(&r).as_deref(), Some("1.1.0"));
        assert_eq!(passed(&r), ["1.3.0: not-in-channel", "1.2.0: revoked"]);
        assert_eq!(r.passed_over[0].reasons[0].to_string(), "never in channel stable");

        // 1.1.0 gone too: the channel's older history still answers, although it points elsewhere now.
        let f = FamilyBuilder::from_family(f).end_of_life_on("1.1.0", "2026-05-01").build();
        let r = run(&f, &stable);
        assert_eq!(chosen(&r).as_deref(), Some("1.0.0"));
        assert_eq!(passed(&r), ["1.3.0: not-in-channel", "1.2.0: revoked", "1.1.0: end-of-life"]);

        let r = run(&f, &ResolveRequest { channel: Some("candidate".into()), ..request(&[]) });
        assert_eq!(chosen(&r).as_deref(), Some("1.3.0"));
    }

    #[test]
    fn an_unknown_channel_is_an_error_listing_the_family_s_channels() {
        let f = FamilyBuilder::new("web")
            .version("1.0.0", &["base-os@1.0.0"])
            .channel("stable", &["1.0.0"])
            .channel("candidate", &["1.0.0"])
            .build();
        let err =
            resolve(&f, &ResolveRequest { channel: Some("beta".into()), ..Default::default() }, day(TODAY))
                .unwrap_err();
        assert_eq!(
            err,
            ResolveError::UnknownChannel {
                family: "web".into(),
                channel: "beta".into(),
                known: vec!["candidate".into(), "stable".into()],
            }
        );
        assert_eq!(err.to_string(), "family web has no channel `beta` (its channels: candidate, stable)");
        let bare = FamilyBuilder::new("web").version("1.0.0", &[]).build();
        let err = resolve(
            &bare,
            &ResolveRequest { channel: Some("stable".into()), ..Default::default() },
            day(TODAY),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "family web has no channel `stable` (it has no channels)");
    }

    /// One version 1.1.0 (with 1.0.0 always acceptable below it), its lifecycle set by `edit`.
    fn one_in_question(edit: impl FnOnce(FamilyBuilder) -> FamilyBuilder) -> FamilyState {
        edit(
            FamilyBuilder::new("f").version("1.0.0", &["base-os@1.0.0"]).version("1.1.0", &["base-os@1.0.0"]),
        )
        .build()
    }

    #[test]
    fn lifecycle_states_on_today_leave_versions_out_unless_included() {
        type Edit = fn(FamilyBuilder) -> FamilyBuilder;
        let candidate: Edit = |b| b;
        let supported: Edit = |b| b.lifecycle("1.1.0", |l| l.supported = true);
        let deprecated_today: Edit = |b| b.deprecated_on("1.1.0", "2026-06-15");
        let deprecated_tomorrow: Edit = |b| b.deprecated_on("1.1.0", "2026-06-16");
        let eol_today: Edit =
            |b| b.deprecated_on("1.1.0", "2026-01-01").end_of_life_on("1.1.0", "2026-06-15");
        let eol_tomorrow: Edit = |b| b.end_of_life_on("1.1.0", "2026-06-16");
        let revoked: Edit = |b| b.lifecycle("1.1.0", |l| l.supported = true).revoked("1.1.0", "CVE-1");
        let inc = |s: &[IncludeState]| s.to_vec();
        use IncludeState::*;
        // (family, include, chosen, reason of 1.1.0 when passed over)
        let cases: Vec<(Edit, Vec<IncludeState>, &str, Option<&str>)> = vec![
            (candidate, inc(&[]), "1.1.0", None),
            (supported, inc(&[]), "1.1.0", None),
            (deprecated_today, inc(&[]), "1.0.0", Some("deprecated since 2026-06-15")),
            (deprecated_today, inc(&[Deprecated]), "1.1.0", None),
            (deprecated_today, inc(&[EndOfLife, Revoked]), "1.0.0", Some("deprecated since 2026-06-15")),
            (deprecated_tomorrow, inc(&[]), "1.1.0", None),
            (eol_today, inc(&[]), "1.0.0", Some("end of life since 2026-06-15")),
            // The state on a day is one state: end of life beats deprecated.
            (eol_today, inc(&[Deprecated]), "1.0.0", Some("end of life since 2026-06-15")),
            (eol_today, inc(&[EndOfLife]), "1.1.0", None),
            (eol_tomorrow, inc(&[]), "1.1.0", None),
            (revoked, inc(&[]), "1.0.0", Some("revoked on 2026-03-01: CVE-1")),
            (revoked, inc(&[Deprecated, EndOfLife]), "1.0.0", Some("revoked on 2026-03-01: CVE-1")),
            (revoked, inc(&[Revoked]), "1.1.0", None),
        ];
        for (i, (edit, include, want, reason)) in cases.into_iter().enumerate() {
            let f = one_in_question(edit);
            let r = run(&f, &ResolveRequest { include, ..request(&["base-os@^1"]) });
            assert_eq!(chosen(&r).as_deref(), Some(want), "case {i}");
            let reasons: Vec<String> =
                r.passed_over.iter().flat_map(|p| p.reasons.iter().map(ToString::to_string)).collect();
            assert_eq!(reasons, reason.into_iter().map(String::from).collect::<Vec<_>>(), "case {i}");
            let c = r.chosen.unwrap();
            assert_eq!(c.state, f.version(&c.version).unwrap().lifecycle.state_on(day(TODAY)), "case {i}");
        }
    }

    #[test]
    fn supported_until_needs_support_past_that_day() {
        type Edit = fn(FamilyBuilder) -> FamilyBuilder;
        let none: Edit = |b| b;
        let dep_on_day: Edit = |b| b.deprecated_on("1.1.0", "2027-06-01");
        let dep_after: Edit = |b| b.deprecated_on("1.1.0", "2027-06-02");
        let eol_on_day: Edit = |b| b.end_of_life_on("1.1.0", "2027-06-01");
        let eol_after: Edit = |b| b.end_of_life_on("1.1.0", "2027-06-02");
        let both_before: Edit =
            |b| b.deprecated_on("1.1.0", "2027-01-01").end_of_life_on("1.1.0", "2027-03-01");
        let revoked: Edit = |b| b.revoked("1.1.0", "CVE-2");
        let cases: Vec<(Edit, &[IncludeState], &str, &[&str])> = vec![
            (none, &[], "1.1.0", &[]),
            (dep_on_day, &[], "1.0.0", &["deprecated on 2027-06-01, so not supported until 2027-06-01"]),
            (dep_after, &[], "1.1.0", &[]),
            (eol_on_day, &[], "1.0.0", &["end of life on 2027-06-01, so not supported until 2027-06-01"]),
            (eol_after, &[], "1.1.0", &[]),
            (
                both_before,
                &[],
                "1.0.0",
                &[
                    "deprecated on 2027-01-01, so not supported until 2027-06-01",
                    "end of life on 2027-03-01, so not supported until 2027-06-01",
                ],
            ),
            // Including a state does not make a version supported later.
            (
                dep_on_day,
                &[IncludeState::Deprecated],
                "1.0.0",
                &["deprecated on 2027-06-01, so not supported until 2027-06-01"],
            ),
            (revoked, &[IncludeState::Revoked], "1.0.0", &["revoked on 2026-03-01: CVE-2"]),
        ];
        for (i, (edit, include, want, reasons)) in cases.into_iter().enumerate() {
            let f = one_in_question(edit);
            let req = ResolveRequest {
                supported_until: Some(day("2027-06-01")),
                include: include.to_vec(),
                ..request(&["base-os@^1"])
            };
            let r = run(&f, &req);
            assert_eq!(chosen(&r).as_deref(), Some(want), "case {i}");
            let got: Vec<String> =
                r.passed_over.iter().flat_map(|p| p.reasons.iter().map(ToString::to_string)).collect();
            assert_eq!(got, *reasons, "case {i}");
        }
        // The facts are typed.
        let r = run(
            &one_in_question(eol_on_day),
            &ResolveRequest { supported_until: Some(day("2027-06-01")), ..Default::default() },
        );
        assert_eq!(
            r.passed_over[0].reasons,
            [Reason::EndOfLifeBefore { on: day("2027-06-01"), supported_until: day("2027-06-01") }]
        );
    }

    fn everything_wrong() -> FamilyState {
        FamilyBuilder::new("debian-minimal")
            .version("1.0.0", &["base-os@1.0.0"])
            .version("2.0.0", &["base-os@2.0.0"])
            .deprecated_on("2.0.0", "2026-02-01")
            .end_of_life_on("2.0.0", "2026-12-31")
            .version("2.1.0", &["base-os@2.0.0"])
            .lifecycle("2.1.0", |l| {
                l.revoked = Some(Revocation {
                    inherited_from: Some("debian-base@3.0.0".into()),
                    ..revocation("CVE-3", "2026-04-02T10:00:00Z")
                })
            })
            .channel("stable", &["1.0.0"])
            .build()
    }

    #[test]
    fn nothing_matching_lists_every_version_with_every_reason() {
        let f = everything_wrong();
        let req = ResolveRequest {
            channel: Some("stable".into()),
            supported_until: Some(day("2027-01-01")),
            ..request(&["base-os@^1"])
        };
        let f = FamilyBuilder::from_family(f).deprecated_on("1.0.0", "2026-06-01").build();
        let r = run(&f, &req);
        assert_eq!(r.chosen, None);
        assert_eq!(
            passed(&r),
            [
                "2.1.0: missing-contract, not-in-channel, revoked",
                "2.0.0: missing-contract, not-in-channel, deprecated, deprecated-before, end-of-life-before",
                "1.0.0: deprecated, deprecated-before",
            ]
        );
        assert_eq!(
            r.passed_over[0].reasons[2].to_string(),
            "revoked on 2026-04-02: CVE-3 (inherited from debian-base@3.0.0)"
        );
        assert_eq!(r.omitted, 0);
        assert_eq!(
            r.reason_counts,
            BTreeMap::from([
                (ReasonKind::MissingContract, 2),
                (ReasonKind::NotInChannel, 2),
                (ReasonKind::Deprecated, 2),
                (ReasonKind::Revoked, 1),
                (ReasonKind::DeprecatedBefore, 2),
                (ReasonKind::EndOfLifeBefore, 1),
            ])
        );
        let text = r.to_string();
        assert!(text.starts_with(
            "debian-minimal: no version answers base-os@^1 in channel stable, supported until 2027-01-01 on 2026-06-15\n  3 versions passed over:\n    2.1.0: not certified for base-os@^1 (certified for base-os@2.0.0); never in channel stable; revoked on"
        ), "{text}");

        let empty = FamilyBuilder::new("empty").build();
        let r = run(&empty, &request(&["base-os@^1"]));
        assert_eq!((r.chosen, r.passed_over.len(), r.omitted, r.reason_counts.len()), (None, 0, 0, 0));
    }

    #[test]
    fn an_answer_serializes_as_the_api_json_and_reads_back() {
        let f = everything_wrong();
        let req = ResolveRequest { include: vec![IncludeState::Deprecated], limit: 1, ..request(&[]) };
        let r = run(&f, &req);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "family": "debian-minimal",
                "request": {"contract": [], "include": ["deprecated"], "limit": 1},
                "today": "2026-06-15",
                "chosen": {
                    "version": "2.0.0",
                    "manifest_digest": "sha256:manifest-of-2.0.0",
                    "image_digest": "sha256:image-of-2.0.0",
                    "state": "deprecated",
                    "lifecycle": {"supported": false, "deprecated_on": "2026-02-01", "end_of_life_on": "2026-12-31"},
                    "certified": ["base-os@2.0.0"],
                },
                "passed_over": [{
                    "version": "2.1.0",
                    "reasons": [{
                        "kind": "revoked",
                        "message": "revoked on 2026-04-02: CVE-3 (inherited from debian-base@3.0.0)",
                        "at": "2026-04-02T10:00:00Z",
                        "reason": "CVE-3",
                        "inherited_from": "debian-base@3.0.0",
                    }],
                }],
                "omitted": 0,
                "reason_counts": {"revoked": 1},
            })
        );
        let back: Resolution = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);

        // Every kind of reason reads back as it was written.
        let req = ResolveRequest {
            channel: Some("stable".into()),
            supported_until: Some(day("2027-01-01")),
            ..request(&["base-os@^1", "ssh-server@>=1.2, <2"])
        };
        let f = FamilyBuilder::from_family(f).end_of_life_on("1.0.0", "2026-06-01").build();
        let r = run(&f, &req);
        let kinds: BTreeMap<_, _> = r.reason_counts.clone();
        assert_eq!(kinds.len(), ReasonKind::ALL.len(), "{kinds:?}");
        let text = serde_json::to_string_pretty(&r).unwrap();
        assert_eq!(serde_json::from_str::<Resolution>(&text).unwrap(), r);
        for (p, pv) in
            r.passed_over.iter().zip(serde_json::to_value(&r).unwrap()["passed_over"].as_array().unwrap())
        {
            for (reason, rv) in p.reasons.iter().zip(pv["reasons"].as_array().unwrap()) {
                assert_eq!(rv["kind"], reason.kind().as_str());
                assert_eq!(rv["message"], reason.to_string());
            }
        }
    }

    #[test]
    fn requests_read_from_query_shaped_and_json_input() {
        // One value per parameter, as a query gives them.
        let one: ResolveRequest = serde_json::from_value(json!({
            "contract": "base-os@^1", "channel": "stable", "supported_until": "2027-06-01",
            "include": "deprecated, end-of-life,deprecated", "limit": 5
        }))
        .unwrap();
        assert_eq!(one.contracts, vec!["base-os@^1".parse::<ContractRequest>().unwrap()]);
        assert_eq!(one.channel.as_deref(), Some("stable"));
        assert_eq!(one.supported_until, Some(day("2027-06-01")));
        assert_eq!(one.include, [IncludeState::Deprecated, IncludeState::EndOfLife]);
        assert_eq!(one.limit, 5);

        let many: ResolveRequest = serde_json::from_value(json!({
            "contract": ["base-os@^1", "web-server@>=1.2, <2"], "include": ["revoked", "deprecated"]
        }))
        .unwrap();
        assert_eq!(many.contracts.len(), 2);
        assert_eq!(many.contracts[1].to_string(), "web-server@>=1.2, <2");
        assert_eq!(many.include, [IncludeState::Deprecated, IncludeState::Revoked]);
        assert_eq!(many.limit, DEFAULT_LIMIT);
        assert_eq!(
            serde_json::from_value::<ResolveRequest>(serde_json::to_value(&many).unwrap()).unwrap(),
            many
        );

        let none: ResolveRequest = serde_json::from_value(json!({})).unwrap();
        assert_eq!(none, ResolveRequest::default());

        for (bad, says) in [
            (json!({"include": "supported"}), "`supported` cannot be included"),
            (json!({"include": "deprecated,gone"}), "`gone` cannot be included"),
            (json!({"contract": "base-os@banana"}), "bad version range"),
            (json!({"supported_until": "2027-13-01"}), "is not a date"),
            (json!({"contract": 7}), "a string or a list of strings"),
        ] {
            let err = serde_json::from_value::<ResolveRequest>(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!("end-of-life".parse::<IncludeState>(), Ok(IncludeState::EndOfLife));
    }

    /// `n` versions 1.0.0 … 1.(n-1).0, each certified for base-os 1.0.0 and deprecated since 2026-01-01.
    fn big_family(n: usize) -> FamilyBuilder {
        let mut b = FamilyBuilder::new("big");
        for i in 0..n {
            b = b.version(&format!("1.{i}.0"), &["base-os@1.0.0"]);
        }
        let mut f = b.build();
        for r in &mut f.versions {
            r.lifecycle.deprecated_on = Some(day("2026-01-01"));
        }
        FamilyBuilder::from_family(f)
    }

    #[test]
    fn ten_thousand_versions_answer_briefly() {
        let f = big_family(10_000).build();
        let req = ResolveRequest { limit: 20, ..request(&["base-os@^2"]) };
        let r = run(&f, &req);
        assert_eq!(r.chosen, None);
        assert_eq!(r.passed_over.len(), 20);
        assert_eq!(r.passed_over[0].version, ver("1.9999.0"));
        assert_eq!(r.passed_over[19].version, ver("1.9980.0"));
        assert_eq!(r.omitted, 9_980);
        assert_eq!(
            r.reason_counts,
            BTreeMap::from([(ReasonKind::MissingContract, 10_000), (ReasonKind::Deprecated, 10_000)])
        );
        assert!(serde_json::to_vec(&r).unwrap().len() < 10_000);
        assert!(r
            .to_string()
            .contains("… and 9980 more (reasons over all: missing-contract 10000, deprecated 10000)"));
        // Speed is measured by bench/catalog.sh, not here.

        // The default limit.
        let r = run(&f, &request(&["base-os@^2"]));
        assert_eq!((r.passed_over.len(), r.omitted), (DEFAULT_LIMIT, 10_000 - DEFAULT_LIMIT));

        // A match at the top stops the walk there.
        let r =
            run(&f, &ResolveRequest { include: vec![IncludeState::Deprecated], ..request(&["base-os@^1"]) });
        assert_eq!((chosen(&r).as_deref(), r.passed_over.len()), (Some("1.9999.0"), 0));
    }

    #[test]
    fn channel_lookups_switch_from_scans_to_a_set_and_agree() {
        let moves: Vec<String> = (0..100).map(|i| format!("1.{}.0", i * 3)).collect();
        let moves: Vec<&str> = moves.iter().map(String::as_str).collect();
        let f = FamilyBuilder::new("f").version("1.0.0", &[]).channel("stable", &moves).build();
        let channel = &f.channels["stable"];
        let mut h = History::new(channel);
        for i in 0..400 {
            let v = ver(&format!("1.{i}.0"));
            assert_eq!(h.had(&v), channel.ever_had(&v), "{v}");
            // 100 moves a lookup: scans while the budget lasts, then one set.
            assert_eq!(h.set.is_some(), (i + 1) * 100 > History::SCAN_BUDGET, "{v}");
        }
    }

    #[test]
    fn a_long_channel_history_over_many_versions_stays_exact() {
        // stable went through every even version of the lower half (5,000 moves), not in order.
        let n = 10_000;
        let moves: Vec<String> =
            (0..n / 2).rev().filter(|i| i % 2 == 0).map(|i| format!("1.{i}.0")).collect();
        let moves: Vec<&str> = moves.iter().map(String::as_str).collect();
        let f = big_family(n).channel("stable", &moves).build();
        let req = ResolveRequest {
            channel: Some("stable".into()),
            include: vec![IncludeState::Deprecated],
            limit: 3,
            ..request(&["base-os@^1"])
        };
        let r = run(&f, &req);
        assert_eq!(chosen(&r).as_deref(), Some("1.4998.0"));
        assert_eq!(
            passed(&r),
            ["1.9999.0: not-in-channel", "1.9998.0: not-in-channel", "1.9997.0: not-in-channel"]
        );
        assert_eq!(r.omitted, n / 2 + 1 - 3);
        assert_eq!(r.reason_counts, BTreeMap::from([(ReasonKind::NotInChannel, n / 2 + 1)]));

        // Odd versions of the lower half were never stable, even ones were, once the set replaced the scan.
        let f = FamilyBuilder::from_family(f).end_of_life_on("1.4998.0", "2026-01-02").build();
        let r = run(&f, &req);
        assert_eq!(chosen(&r).as_deref(), Some("1.4996.0"));
        assert_eq!(r.reason_counts[&ReasonKind::NotInChannel], n / 2 + 2);
        assert_eq!(r.reason_counts[&ReasonKind::EndOfLife], 1);
    }
}
