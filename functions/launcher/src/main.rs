//! The launcher on Lambda, fed by the workload queue (SQS event source
//! with `ReportBatchItemFailures`): each workload becomes an ECS task.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = sluice_lambda::sdk_config().await;
    let app = sluice_lambda::app_from_env(&config).await?;
    let ecs = std::sync::Arc::new(sluice_lambda::ecs_launcher_from_env(&config).await?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (app, ecs) = (app.clone(), ecs.clone());
        async move { Ok::<_, Error>(sluice_lambda::launcher(&app, &ecs, &event.payload).await) }
    }))
    .await
}
