//! The Config API on Lambda behind API Gateway (REST, proxy integration):
//! the same router as `sluice up`, built once per container.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = sluice_lambda::app_from_env().await?;
    sluice_api::config::builtin::seed(&app).await?;
    lambda_http::run(sluice_api::config_router(app)).await
}
