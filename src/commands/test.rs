//! `kiln test`: certify a build output against its claimed contracts and print the verdict.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_testsuites::{
    certify::{certify, CertifyOptions, CERTIFICATION_FILE, JUNIT_FILE},
    outcome::Outcome,
    runtime::RuntimeOptions,
};

use crate::{cli::TestArgs, report::Reported, ExitStatus, UsageError};

/// The nearest `contracts/` folder in `start` or above.
fn find_contracts(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join("contracts")).find(|d| d.is_dir())
}

pub fn run(args: &TestArgs, json: bool) -> anyhow::Result<()> {
    let contracts_dir = match &args.contracts {
        Some(d) => d.clone(),
        None => {
            let cwd = std::env::current_dir().context("no current folder")?;
            find_contracts(&cwd).ok_or_else(|| {
                UsageError("no `contracts/` folder here or above: name one with --contracts DIR".into())
            })?
        }
    };
    let contracts = kiln_contract::ContractSet::load(&contracts_dir)
        .with_context(|| format!("cannot use the contracts in {}", contracts_dir.display()))?;
    let opts = CertifyOptions {
        requests: args.requests.clone(),
        runtime: RuntimeOptions {
            timeout: std::time::Duration::from_secs(args.timeout),
            ..RuntimeOptions::default()
        },
    };
    tracing::info!("certifying {} against the contracts in {}", args.dir.display(), contracts_dir.display());
    let cert = certify(&args.dir, &contracts, &opts)
        .with_context(|| format!("cannot certify {}", args.dir.display()))?;
    if json {
        super::print_json(&cert)?;
    } else {
        for c in &cert.contracts {
            println!("{} {} (for {})", if c.passed { "PASS" } else { "FAIL" }, c.contract, c.requested);
            for r in &c.checks {
                match &r.result.outcome {
                    Ok(Outcome::Fail { expected, found }) => {
                        println!(
                            "  fail  {} [{}]: expected {expected}; found {found}",
                            r.result.id, r.artifact
                        )
                    }
                    Err(e) => println!("  error {} [{}]: {}", r.result.id, r.artifact, e.message),
                    Ok(Outcome::Skip { reason }) => {
                        println!("  skip  {} [{}]: {reason}", r.result.id, r.artifact)
                    }
                    Ok(Outcome::Pass) => {}
                }
            }
        }
        for r in &cert.artifact_checks {
            if let Ok(Outcome::Fail { expected, found }) = &r.outcome {
                println!("FAIL {}: expected {expected}; found {found}", r.id);
            }
        }
        let s = cert.summary;
        println!("{} passed, {} failed, {} skipped, {} errors", s.pass, s.fail, s.skip, s.error);
        println!("report  {}", args.dir.join(CERTIFICATION_FILE).display());
        println!("junit   {}", args.dir.join(JUNIT_FILE).display());
    }
    if cert.passed {
        Ok(())
    } else {
        Err(Reported(ExitStatus::Failure).into())
    }
}
