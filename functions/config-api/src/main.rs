//! The Config API on Lambda behind API Gateway (REST, proxy integration):
//! the same router as `sluice up`, built once per container. The built-in
//! definitions are seeded by `sluice provision`, not at each cold start.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = sluice_lambda::sdk_config().await;
    let app = sluice_lambda::app_from_env(&config).await?;
    lambda_http::run(sluice_api::config_router(app)).await
}
