//! The certification as JUnit XML (`report/junit.xml`), the format CI systems show test results in: one
//! `<testsuite>` per contract, one `<testcase>` per requirement and artifact, with `<failure>` (expected
//! and found), `<skipped>` (the reason) or `<error>` (the checker's problem).
//!
//! Written by hand: the format is a few elements with escaped text, and the crates for it bring a date-time
//! library and UUIDs that a reproducible report has no use for.

use std::fmt::Write as _;

use crate::certify::Certification;
use crate::outcome::Outcome;

/// Text or attribute value with XML's five special characters escaped, and characters XML 1.0 cannot hold
/// (controls other than tab, newline, return) replaced.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The report as JUnit XML.
pub fn junit_xml(cert: &Certification) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total = cert.summary.pass + cert.summary.fail + cert.summary.skip + cert.summary.error;
    let time: f64 =
        cert.contracts.iter().flat_map(|c| &c.checks).map(|c| c.result.duration.as_secs_f64()).sum();
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{total}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\">",
        escape(&format!("{} {}", cert.image.name, cert.image.version)),
        cert.summary.fail,
        cert.summary.error,
        cert.summary.skip,
    );
    for c in &cert.contracts {
        let (mut fail, mut err, mut skip) = (0, 0, 0);
        for r in &c.checks {
            match &r.result.outcome {
                Ok(Outcome::Fail { .. }) => fail += 1,
                Ok(Outcome::Skip { .. }) => skip += 1,
                Err(_) => err += 1,
                Ok(Outcome::Pass) => {}
            }
        }
        let suite_time: f64 = c.checks.iter().map(|r| r.result.duration.as_secs_f64()).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fail}\" errors=\"{err}\" skipped=\"{skip}\" time=\"{suite_time:.3}\">",
            escape(&c.contract),
            c.checks.len(),
        );
        for r in &c.checks {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&r.declared_by),
                escape(&format!("{} [{}]", r.result.id, r.artifact)),
                r.result.duration.as_secs_f64()
            );
            match &r.result.outcome {
                Ok(Outcome::Pass) => x.push_str("/>\n"),
                Ok(Outcome::Skip { reason }) => {
                    let _ =
                        writeln!(x, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(reason));
                }
                Ok(Outcome::Fail { expected, found }) => {
                    let _ = writeln!(
                        x,
                        ">\n      <failure type=\"{}\" message=\"{}\">expected: {}\nfound: {}</failure>\n    </testcase>",
                        escape(r.result.kind.as_str()),
                        escape(&format!("{}: expected {expected}", r.description)),
                        escape(expected),
                        escape(found)
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        x,
                        ">\n      <error type=\"checker\" message=\"{}\"/>\n    </testcase>",
                        escape(&e.message)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(escape("a<b>&\"c'\u{1}\n"), "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\n");
    }
}
