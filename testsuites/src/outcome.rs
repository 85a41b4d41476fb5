//! What checking one requirement gives, for every kind of check (static or runtime): Pass, Skip with the
//! reason, or Fail with evidence (what was expected, what was found); or an error when the checker itself
//! broke (it could not observe what it needed), which is never reported as a Fail of the image.

use std::{fmt, time::Duration};

use serde::{ser::SerializeMap as _, Serialize, Serializer};

/// The verdict on one requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    /// The check does not apply to this image (e.g. a runtime check of an OCI-only image).
    Skip {
        reason: String,
    },
    /// The image does not meet the requirement: evidence a reader can act on.
    Fail {
        expected: String,
        found: String,
    },
}

impl Outcome {
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::Skip { reason: reason.into() }
    }

    pub fn fail(expected: impl Into<String>, found: impl Into<String>) -> Self {
        Self::Fail { expected: expected.into(), found: found.into() }
    }

    /// `Pass` when `ok`, else a Fail with this evidence.
    pub fn pass_if(ok: bool, expected: impl Into<String>, found: impl Into<String>) -> Self {
        if ok {
            Self::Pass
        } else {
            Self::fail(expected, found)
        }
    }

    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass)
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Self::Fail { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => write!(f, "pass"),
            Self::Skip { reason } => write!(f, "skip: {reason}"),
            Self::Fail { expected, found } => write!(f, "fail: expected {expected}; found {found}"),
        }
    }
}

/// A checker that could not decide: what it could not observe, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct CheckError {
    pub message: String,
}

impl CheckError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// One requirement's result in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The requirement's id.
    pub id: String,
    /// The check's kind as written in contract files (`unit-active`).
    pub kind: String,
    pub outcome: Result<Outcome, CheckError>,
    /// Time spent on this check alone.
    pub duration: Duration,
}

impl CheckResult {
    pub fn is_pass(&self) -> bool {
        matches!(self.outcome, Ok(Outcome::Pass))
    }
}

/// Flat: `{"id", "kind", "outcome": "pass"|"skip"|"fail"|"error", "reason" | "expected" + "found" | "error",
/// "duration_secs"}`.
impl Serialize for CheckResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("kind", &self.kind)?;
        match &self.outcome {
            Ok(Outcome::Pass) => m.serialize_entry("outcome", "pass")?,
            Ok(Outcome::Skip { reason }) => {
                m.serialize_entry("outcome", "skip")?;
                m.serialize_entry("reason", reason)?;
            }
            Ok(Outcome::Fail { expected, found }) => {
                m.serialize_entry("outcome", "fail")?;
                m.serialize_entry("expected", expected)?;
                m.serialize_entry("found", found)?;
            }
            Err(e) => {
                m.serialize_entry("outcome", "error")?;
                m.serialize_entry("error", &e.message)?;
            }
        }
        m.serialize_entry("duration_secs", &(self.duration.as_millis() as f64 / 1000.0))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Result<Outcome, CheckError>) -> serde_json::Value {
        let r = CheckResult {
            id: "sshd-up".into(),
            kind: "unit-active".into(),
            outcome,
            duration: Duration::from_millis(1250),
        };
        serde_json::to_value(&r).unwrap()
    }

    #[test]
    fn results_serialize_flat_with_their_evidence() {
        assert_eq!(
            result(Ok(Outcome::fail("ssh.service active", "inactive"))),
            serde_json::json!({"id": "sshd-up", "kind": "unit-active", "outcome": "fail",
                "expected": "ssh.service active", "found": "inactive", "duration_secs": 1.25})
        );
        assert_eq!(result(Ok(Outcome::Pass))["outcome"], "pass");
        let skip = result(Ok(Outcome::skip("OCI image")));
        assert_eq!((&skip["outcome"], &skip["reason"]), (&"skip".into(), &"OCI image".into()));
        let err = result(Err(CheckError::new("no answer for /proc/net/tcp")));
        assert_eq!(
            (&err["outcome"], &err["error"]),
            (&"error".into(), &"no answer for /proc/net/tcp".into())
        );
        // The outcome on its own is tagged the same way.
        assert_eq!(
            serde_json::to_value(Outcome::skip("x")).unwrap(),
            serde_json::json!({"outcome": "skip", "reason": "x"})
        );
    }

    #[test]
    fn pass_if_keeps_the_evidence_of_a_failure() {
        assert_eq!(Outcome::pass_if(true, "a", "b"), Outcome::Pass);
        assert_eq!(Outcome::pass_if(false, "a", "b").to_string(), "fail: expected a; found b");
    }
}
