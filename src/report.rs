//! Error reporting: the exit code an error maps to, and how it is printed (human on stderr, JSON on stdout).

use kiln_blueprint::{plan::PlanError, BlueprintError, LoadError};
use kiln_contract::ContractSetError;

/// kiln's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    Ok = 0,
    /// The work failed (a build, a check, a network or disk problem).
    Failure = 1,
    /// Bad input or usage: an invalid blueprint, a bad argument.
    Usage = 2,
}

/// A failure the command has already reported on stdout (e.g. a certification that did not pass): nothing
/// more is printed, only the exit status is set.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
pub struct Reported(pub ExitStatus);

/// An error in how kiln was called, found after argument parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The blueprint-loading error in a chain, if any (`PlanError::Load` is transparent, so it is looked for too).
fn load_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a LoadError> {
    e.downcast_ref::<LoadError>().or_else(|| match e.downcast_ref::<PlanError>() {
        Some(PlanError::Load(l)) => Some(l),
        _ => None,
    })
}

fn blueprint_error(err: &anyhow::Error) -> Option<&BlueprintError> {
    err.chain().find_map(|e| {
        e.downcast_ref::<BlueprintError>()
            .or_else(|| match load_error(e) {
                Some(LoadError::Blueprint(b)) => Some(b),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<PlanError>() {
                Some(PlanError::Blueprint(b)) => Some(b),
                _ => None,
            })
    })
}

/// Problems in contract files, if the chain has them.
fn contract_errors(err: &anyhow::Error) -> Option<&[BlueprintError]> {
    err.chain().find_map(|e| match e.downcast_ref::<ContractSetError>() {
        Some(ContractSetError::Invalid { errors }) => Some(errors.as_slice()),
        _ => None,
    })
}

fn is_usage(err: &anyhow::Error) -> bool {
    blueprint_error(err).is_some()
        || contract_errors(err).is_some()
        || err.chain().any(|e| {
            e.is::<UsageError>()
                || matches!(
                    load_error(e),
                    Some(
                        LoadError::NoBlueprint { .. }
                            | LoadError::Ambiguous { .. }
                            | LoadError::UnknownForm { .. }
                            | LoadError::UnknownVar { .. }
                    )
                )
                || e.downcast_ref::<kiln_catalog::client::ClientError>()
                    .is_some_and(|c| matches!(c.status(), Some(400 | 404)))
                || e.downcast_ref::<kiln_catalog::CatalogError>().is_some_and(|c| {
                    matches!(
                        c,
                        kiln_catalog::CatalogError::Invalid { .. }
                            | kiln_catalog::CatalogError::NotFound { .. }
                    )
                })
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        })
}

/// Print an error and return the exit status it maps to.
pub fn report(err: &anyhow::Error, json: bool) -> ExitStatus {
    if let Some(Reported(status)) = err.downcast_ref::<Reported>() {
        return *status;
    }
    let status = if is_usage(err) { ExitStatus::Usage } else { ExitStatus::Failure };
    let mut problems = blueprint_error(err).map(BlueprintError::located).unwrap_or_default();
    if let Some(errors) = contract_errors(err) {
        problems.extend(errors.iter().flat_map(BlueprintError::located));
    }
    if json {
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        let body = serde_json::json!({
            "error": {
                "message": err.to_string(),
                "chain": chain,
                "exit_code": status as u8,
                "problems": problems,
            }
        });
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{body}");
    }
    // Human rendering on stderr, with or without --json.
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        if cause.downcast_ref::<BlueprintError>().is_some()
            || cause.downcast_ref::<ContractSetError>().is_some()
        {
            break;
        }
        eprintln!("  caused by: {cause}");
    }
    if let Some(errors) = contract_errors(err) {
        let n: usize = errors.iter().map(|b| b.diags.len()).sum();
        for b in errors {
            for r in b.reports() {
                eprintln!("{r:?}");
            }
        }
        eprintln!(
            "{} problem{} found in the contracts; nothing was tested",
            n,
            if n == 1 { "" } else { "s" }
        );
    }
    if let Some(b) = blueprint_error(err) {
        let n = b.diags.len();
        for r in b.reports() {
            eprintln!("{r:?}");
        }
        eprintln!("{} problem{} found; nothing was written", n, if n == 1 { "" } else { "s" });
    }
    status
}
