//! The monitor on Lambda, invoked every minute by a schedule: deadlines,
//! tasks of ended workloads stopped, due retries, retention.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

/// How long finished workloads are kept where no TTL removes them.
const RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = sluice_lambda::sdk_config().await;
    let app = sluice_lambda::app_from_env(&config).await?;
    let tasks = std::sync::Arc::new(sluice_lambda::ecs_cluster_from_env(&config));
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| {
        let (app, tasks) = (app.clone(), tasks.clone());
        async move { Ok::<_, Error>(sluice_lambda::monitor(&app, Some(&tasks), RETENTION).await?) }
    }))
    .await
}
