//! The scheduler on Lambda, invoked by EventBridge Scheduler with a
//! connection's schedule input, or with a job to retry.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = sluice_lambda::sdk_config().await;
    let app = sluice_lambda::app_from_env(&config).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { Ok::<_, Error>(sluice_lambda::scheduler(&app, &event.payload).await?) }
    }))
    .await
}
