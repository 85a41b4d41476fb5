//! `kiln plan`: print the normalized build plan of a blueprint.

use anyhow::Context as _;

use crate::cli::PlanArgs;

pub fn run(args: &PlanArgs, json: bool) -> anyhow::Result<()> {
    let path = &args.blueprint.blueprint;
    let plan = kiln_blueprint::plan::plan_path(path, &args.blueprint.vars())
        .with_context(|| format!("cannot plan {}", path.display()))?;
    if json {
        super::print_json(&plan)
    } else {
        print!("{}", plan.render());
        Ok(())
    }
}
