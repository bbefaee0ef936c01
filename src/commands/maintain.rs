//! `sms-relay maintain --now [JOB]`

use chrono::Utc;

use super::{CommandError, connect_migrated};
use crate::{
    cli::MaintainArgs,
    config::Config,
    maintenance::{Job, Ran},
    store::Store,
};

/// Runs `args.job` (or every job) once, now, and prints what each did.
pub(super) async fn maintain(
    config: &Config,
    url: &str,
    args: MaintainArgs,
) -> Result<(), CommandError> {
    let jobs = match &args.job {
        Some(name) => vec![Job::named(name).ok_or_else(|| CommandError::UnknownJob(name.clone()))?],
        None => Job::ALL.to_vec(),
    };
    let pool = connect_migrated(url, 2).await?;
    let maintenance = config.maintenance(Store::new(pool));
    for job in jobs {
        match maintenance.run(job, Utc::now()).await? {
            Ran::Done(rows) => println!("{}: {rows} rows", job.name()),
            Ran::Taken | Ran::Busy => println!("{}: already running elsewhere", job.name()),
            Ran::Failed(error) => {
                return Err(CommandError::MaintenanceFailed {
                    job: job.name(),
                    error,
                });
            }
        }
    }
    Ok(())
}
