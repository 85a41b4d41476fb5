//! The catalog's data model: families, their versions with artifacts, certified contracts and lifecycle,
//! channels with their history, the audit log and access scopes. Pure types, shared by the stores, the
//! resolver, the release notes, the HTTP API and its clients (they serialize as the API's JSON).

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use kiln_blueprint::manifest::ArtifactKind;

/// A calendar day (`YYYY-MM-DD`, UTC): lifecycle dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub time::Date);

impl Day {
    /// The day of a Unix timestamp (UTC).
    pub fn of(ts: Timestamp) -> Self {
        Self(ts.to_datetime().date())
    }

    /// This day plus `days` (saturating at the calendar's end).
    pub fn plus_days(self, days: u32) -> Self {
        Self(self.0.checked_add(time::Duration::days(i64::from(days))).unwrap_or(time::Date::MAX))
    }

    /// This day plus `months` calendar months; the day of month is clamped to the target month's length
    /// (31 January + 1 month = 28/29 February).
    pub fn plus_months(self, months: u32) -> Self {
        let total =
            i64::from(self.0.year()) * 12 + i64::from(u8::from(self.0.month()) - 1) + i64::from(months);
        let Ok(year) = i32::try_from(total.div_euclid(12)) else {
            return Self(time::Date::MAX);
        };
        let month = u8::try_from(total.rem_euclid(12) + 1)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .unwrap_or(time::Month::December);
        let last = month.length(year);
        time::Date::from_calendar_date(year, month, self.0.day().min(last))
            .map(Self)
            .unwrap_or(Self(time::Date::MAX))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(f, "{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }
}

impl FromStr for Day {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a date (YYYY-MM-DD)");
        let mut parts = s.splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let y: i32 = y.parse().map_err(|_| bad())?;
        let m: u8 = m.parse().map_err(|_| bad())?;
        let d: u8 = d.parse().map_err(|_| bad())?;
        let month = time::Month::try_from(m).map_err(|_| bad())?;
        time::Date::from_calendar_date(y, month, d).map(Self).map_err(|_| bad())
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A moment, in whole seconds since the Unix epoch; serialized as RFC 3339 UTC (`2026-11-22T08:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(time::OffsetDateTime::now_utc().unix_timestamp())
    }

    fn to_datetime(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(self.0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_datetime();
        write!(f, "{}T{:02}:{:02}:{:02}Z", Day(t.date()), t.hour(), t.minute(), t.second())
    }
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)");
        let (day, rest) = s.split_once('T').ok_or_else(bad)?;
        let day: Day = day.parse().map_err(|_| bad())?;
        let rest = rest.strip_suffix('Z').ok_or_else(bad)?;
        let mut hms = rest.split(':').map(|p| if p.len() == 2 { p.parse::<u8>().ok() } else { None });
        let (Some(Some(h)), Some(Some(m)), Some(Some(sec)), None) =
            (hms.next(), hms.next(), hms.next(), hms.next())
        else {
            return Err(bad());
        };
        let t = time::Time::from_hms(h, m, sec).map_err(|_| bad())?;
        Ok(Self(time::PrimitiveDateTime::new(day.0, t).assume_utc().unix_timestamp()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A contract a version is certified for: `base-os@1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractId {
    pub name: String,
    pub version: semver::Version,
}

impl fmt::Display for ContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for ContractId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) =
            s.split_once('@').ok_or_else(|| format!("`{s}` is not a certified contract (name@version)"))?;
        if name.is_empty() {
            return Err(format!("`{s}`: contract name is empty"));
        }
        let version = version.parse().map_err(|e| format!("`{s}`: bad version: {e}"))?;
        Ok(Self { name: name.to_owned(), version })
    }
}

impl Serialize for ContractId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContractId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A contract range a consumer asks for: `base-os@^1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractRequest {
    pub name: String,
    pub req: semver::VersionReq,
}

impl ContractRequest {
    /// Whether a certified contract answers this request.
    pub fn matches(&self, c: &ContractId) -> bool {
        c.name == self.name && self.req.matches(&c.version)
    }
}

impl fmt::Display for ContractRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.req)
    }
}

impl FromStr for ContractRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, req) = match s.split_once('@') {
            Some((n, r)) => (n, r),
            None => (s, "*"),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("`{s}`: `{name}` is not a contract name"));
        }
        let req =
            semver::VersionReq::parse(req).map_err(|e| format!("`{s}`: bad version range `{req}`: {e}"))?;
        Ok(Self { name: name.to_owned(), req })
    }
}

impl Serialize for ContractRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `s` is a valid family or channel name: lowercase ASCII letters, digits, `-`, `_`, `.`, starting
/// with a letter or digit, at most 64 bytes (the blueprint's name rule).
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The image a version was built FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub family: String,
    pub version: semver::Version,
    /// The parent's OCI image manifest digest.
    pub digest: String,
    /// The reference as the blueprint wrote it (`catalog:debian-minimal@stable`).
    pub reference: String,
}

/// One artifact of a version, as its signed `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub kind: ArtifactKind,
    pub path: String,
    /// `sha256:…` (for an OCI image: its image manifest's digest).
    pub digest: String,
    pub size: u64,
}

impl From<&kiln_blueprint::manifest::Artifact> for ArtifactRecord {
    /// The record of an artifact as the build's `manifest.json` lists it.
    fn from(a: &kiln_blueprint::manifest::Artifact) -> Self {
        Self { kind: a.kind, path: a.path.clone(), digest: a.sha256.clone(), size: a.size }
    }
}

/// One file of a published bundle (the build output folder as signed): what the catalog stores as a blob.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the bundle root, `/`-separated.
    pub path: String,
    /// `sha256:…`
    pub digest: String,
    pub size: u64,
}

/// How the catalog sets a family's lifecycle dates (from the blueprint's `[lifecycle]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecyclePolicy {
    /// Months a version stays supported after it is published (its end of life then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_months: Option<u32>,
    /// Days after a successor becomes stable that a version is deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecate_after_days: Option<u32>,
}

/// Where a version stands, on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifecycleState {
    Candidate,
    Supported,
    Deprecated,
    EndOfLife,
    Revoked,
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Candidate => "candidate",
            Self::Supported => "supported",
            Self::Deprecated => "deprecated",
            Self::EndOfLife => "end-of-life",
            Self::Revoked => "revoked",
        })
    }
}

impl FromStr for LifecycleState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "candidate" => Self::Candidate,
            "supported" => Self::Supported,
            "deprecated" => Self::Deprecated,
            "end-of-life" => Self::EndOfLife,
            "revoked" => Self::Revoked,
            _ => {
                return Err(format!(
                    "`{s}` is not a lifecycle state (candidate, supported, deprecated, end-of-life, revoked)"
                ))
            }
        })
    }
}

/// Why a version was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: String,
    pub at: Timestamp,
    pub by: String,
    /// Set when the version is flagged because an image it was built FROM was revoked:
    /// `family@version` of that ancestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

/// A version's lifecycle: what was decided (the stage, dates, a revocation). The state on a given day
/// follows from it ([`Lifecycle::state_on`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `candidate` until declared supported (by hand, or when a channel named `stable` first points at it).
    pub supported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_since: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_on: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_life_on: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

impl Lifecycle {
    /// The state on `today`: revoked beats end of life beats deprecated (each from its date on) beats the
    /// stage.
    pub fn state_on(&self, today: Day) -> LifecycleState {
        if self.revoked.is_some() {
            LifecycleState::Revoked
        } else if self.end_of_life_on.is_some_and(|d| d <= today) {
            LifecycleState::EndOfLife
        } else if self.deprecated_on.is_some_and(|d| d <= today) {
            LifecycleState::Deprecated
        } else if self.supported {
            LifecycleState::Supported
        } else {
            LifecycleState::Candidate
        }
    }
}

/// One published version of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub family: String,
    pub version: semver::Version,
    /// `sha256:…` of the signed `manifest.json`: the version's identity (re-publishing it is a no-op).
    pub manifest_digest: String,
    /// Digest of the OCI image manifest, when the version has an OCI image (what images built FROM it name
    /// as their parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    pub published_at: Timestamp,
    pub published_by: String,
    /// Fingerprint of the trusted key the version's signatures verified with.
    pub signed_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// The contract requests the blueprint claims (`base-os@^1`).
    pub claimed: Vec<String>,
    /// The contracts the certification report certified (`base-os@1.0.0`), sorted.
    pub certified: Vec<ContractId>,
    pub artifacts: Vec<ArtifactRecord>,
    /// Every file of the bundle, sorted by path.
    pub files: Vec<FileRecord>,
    pub policy: LifecyclePolicy,
    pub lifecycle: Lifecycle,
}

impl VersionRecord {
    /// The certified contracts answering `request`.
    pub fn certifies(&self, request: &ContractRequest) -> bool {
        self.certified.iter().any(|c| request.matches(c))
    }

    /// `family@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.family, self.version)
    }

    /// The bundle file at `path`.
    pub fn file(&self, path: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// A channel moving from one version to another: the audit of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMove {
    pub at: Timestamp,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<semver::Version>,
    pub to: semver::Version,
}

/// A named pointer of a family at one version (`stable`, `candidate`, custom), with every move it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub version: semver::Version,
    /// Oldest first; the last move set `version`.
    pub history: Vec<ChannelMove>,
}

impl Channel {
    /// Whether the channel ever pointed at `v`.
    pub fn ever_had(&self, v: &semver::Version) -> bool {
        self.history.iter().any(|m| &m.to == v)
    }
}

/// A family with everything the resolver and the lifecycle rules look at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FamilyState {
    pub name: String,
    /// Sorted by version, oldest first.
    pub versions: Vec<VersionRecord>,
    pub channels: BTreeMap<String, Channel>,
    /// Bumped by every change to the family: readers cache a family by it.
    pub revision: u64,
}

impl FamilyState {
    pub fn version(&self, v: &semver::Version) -> Option<&VersionRecord> {
        self.versions.binary_search_by(|r| r.version.cmp(v)).ok().map(|i| &self.versions[i])
    }

    /// The newest version below `v`: what release notes compare against.
    pub fn previous(&self, v: &semver::Version) -> Option<&VersionRecord> {
        let i = self.versions.partition_point(|r| &r.version < v);
        i.checked_sub(1).map(|i| &self.versions[i])
    }
}

/// A family in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilySummary {
    pub name: String,
    pub versions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<semver::Version>,
    /// Channel name → version.
    pub channels: BTreeMap<String, semver::Version>,
}

/// A version's release notes, rendered at publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseNotes {
    pub markdown: String,
    pub html: String,
}

/// What a token may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Read,
    Publish,
    Promote,
    Lifecycle,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Publish, Scope::Promote, Scope::Lifecycle, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Publish => "publish",
            Self::Promote => "promote",
            Self::Lifecycle => "lifecycle",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a scope (read, publish, promote, lifecycle, admin)"))
    }
}

/// A token as the catalog keeps it: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short public identifier (the first characters of the hash).
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub created_by: String,
    /// `sha256:…` of the token.
    #[serde(skip)]
    pub hash: String,
}

impl TokenRecord {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// One entry of the audit log: who did what, when, from what to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    /// `publish`, `promote`, `lifecycle`, `revoke`, `token-create`, `token-revoke`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<semver::Version>,
    /// Action-specific facts (`{"channel": "stable", "from": "1.0.0", "to": "1.1.0"}`).
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    #[test]
    fn days_parse_print_and_add() {
        assert_eq!(day("2027-06-01").to_string(), "2027-06-01");
        assert!("2027-6-1".parse::<Day>().is_err());
        assert!("2027-02-30".parse::<Day>().is_err());
        assert_eq!(day("2026-01-31").plus_months(1), day("2026-02-28"));
        assert_eq!(day("2026-11-22").plus_months(14), day("2028-01-22"));
        assert_eq!(day("2026-12-30").plus_days(3), day("2027-01-02"));
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let t: Timestamp = "2026-11-22T08:17:06Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-22T08:17:06Z");
        assert_eq!(Day::of(t), day("2026-11-22"));
        assert!("2026-11-22 08:17:06".parse::<Timestamp>().is_err());
        assert!("2026-11-22T25:00:00Z".parse::<Timestamp>().is_err());
    }

    #[test]
    fn lifecycle_state_follows_dates() {
        let mut l = Lifecycle::default();
        assert_eq!(l.state_on(day("2027-01-01")), LifecycleState::Candidate);
        l.supported = true;
        l.deprecated_on = Some(day("2027-01-01"));
        l.end_of_life_on = Some(day("2027-06-01"));
        assert_eq!(l.state_on(day("2026-12-31")), LifecycleState::Supported);
        assert_eq!(l.state_on(day("2027-01-01")), LifecycleState::Deprecated);
        assert_eq!(l.state_on(day("2027-06-01")), LifecycleState::EndOfLife);
        l.revoked =
            Some(Revocation { reason: "CVE".into(), at: Timestamp(0), by: "a".into(), inherited_from: None });
        assert_eq!(l.state_on(day("2026-01-01")), LifecycleState::Revoked);
    }

    #[test]
    fn contract_requests_match_certified_contracts() {
        let r: ContractRequest = "base-os@^1".parse().unwrap();
        assert!(r.matches(&"base-os@1.2.0".parse().unwrap()));
        assert!(!r.matches(&"base-os@2.0.0".parse().unwrap()));
        assert!(!r.matches(&"ssh-server@1.0.0".parse().unwrap()));
        assert!("base os@^1".parse::<ContractRequest>().is_err());
        assert!("base-os@banana".parse::<ContractRequest>().is_err());
    }

    #[test]
    fn admin_tokens_have_every_scope() {
        let t = TokenRecord {
            id: "x".into(),
            name: "n".into(),
            scopes: vec![Scope::Admin],
            created_at: Timestamp(0),
            created_by: "a".into(),
            hash: String::new(),
        };
        assert!(Scope::ALL.iter().all(|s| t.allows(*s)));
        let p = TokenRecord { scopes: vec![Scope::Publish], ..t };
        assert!(p.allows(Scope::Publish) && !p.allows(Scope::Promote));
    }
}
