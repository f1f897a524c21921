//! The workload API on Lambda behind API Gateway: the routes a running
//! task calls about its own workload, each opened by its credential.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = sluice_lambda::sdk_config().await;
    let app = sluice_lambda::app_from_env(&config).await?;
    lambda_http::run(sluice_api::workload_router(app)).await
}
