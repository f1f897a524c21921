//! The AWS adapters of the platform's ports: the store on DynamoDB, the
//! queue on SQS, secrets on Secrets Manager. They meet the same contract
//! as the SQLite adapters (`sluice_store::contract`), against any endpoint
//! `aws-config` finds: real AWS, LocalStack, or moto (`AWS_ENDPOINT_URL`).
//!
//! Every transition is a conditional write on the item's `version`; a
//! failed condition is read back to tell a conflict from a missing item.
//! Where two items change together (a job and its connection's lock) the
//! write is one `TransactWriteItems`.

mod dynamo;
mod ecs;
mod events;
mod logs;
pub mod moto;
pub mod provision;
mod schedules;
mod secrets;
mod sqs;

pub use dynamo::DynamoStore;
pub use ecs::{EcsPlacement, EcsTasks};
pub use events::EventBridgeEvents;
pub use logs::CloudWatchLogs;
pub use schedules::{EventBridgeSchedules, ScheduleTarget};
pub use secrets::SecretsManagerStore;
pub use sqs::SqsQueue;

use sluice_store::StoreError;

/// The names of our resources, all derived from one prefix so that several
/// platforms (or tests) can share an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub config_table: String,
    pub jobs_table: String,
    pub workloads_table: String,
    pub queue: String,
    pub dead_letter_queue: String,
    /// Secrets are named `<prefix>/<hint>-<unique>`.
    pub secrets_prefix: String,
    /// The EventBridge Scheduler group holding one schedule per connection.
    pub schedule_group: String,
    /// The EventBridge bus job events are published on.
    pub event_bus: String,
    /// The CloudWatch Logs group of attempt logs.
    pub log_group: String,
    /// The ECS cluster tasks run in, and their `awslogs` group.
    pub cluster: String,
    pub task_log_group: String,
}

impl Names {
    pub fn with_prefix(prefix: &str) -> Names {
        Names {
            config_table: format!("{prefix}-config"),
            jobs_table: format!("{prefix}-jobs"),
            workloads_table: format!("{prefix}-workloads"),
            queue: format!("{prefix}-workloads"),
            dead_letter_queue: format!("{prefix}-workloads-dlq"),
            secrets_prefix: prefix.to_owned(),
            schedule_group: prefix.to_owned(),
            event_bus: format!("{prefix}-events"),
            log_group: format!("/{prefix}/attempts"),
            cluster: prefix.to_owned(),
            task_log_group: format!("/{prefix}/tasks"),
        }
    }
}

/// The SDK configuration from the environment (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, credentials ...), loaded once at start.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// `config` with each service at an endpoint of its own, as
/// `AWS_ENDPOINT_URL_<SERVICE>` beside `AWS_ENDPOINT_URL` set them for a
/// process: say DynamoDB and ECS on moto and the rest on LocalStack.
/// `endpoints` are (the SDK's service id, e.g. `DynamoDB`, `ECS`; URL);
/// every other service goes to `default`. `config` must have no endpoint
/// set in code: the SDK puts that one before any service's own.
pub fn with_service_endpoints(config: &aws_config::SdkConfig, endpoints: &[(&str, &str)], default: &str) -> aws_config::SdkConfig {
    #[derive(Debug)]
    struct Endpoints {
        services: Vec<(String, String)>,
        default: String,
    }
    impl aws_types::service_config::LoadServiceConfig for Endpoints {
        fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
            if key.env() != "AWS_ENDPOINT_URL" {
                return None;
            }
            let own = self.services.iter().find(|(service, _)| service.eq_ignore_ascii_case(key.service_id()));
            Some(own.map_or(&self.default, |(_, url)| url).clone())
        }
    }
    let endpoints = Endpoints { services: endpoints.iter().map(|(s, u)| (s.to_string(), u.to_string())).collect(), default: default.to_owned() };
    config.to_builder().service_config(endpoints).build()
}

/// Any SDK failure that is not a condition we asked for.
pub(crate) fn unavailable<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// The service's own message for an SDK error, for errors people read.
pub(crate) fn describe<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError {
    let text = match &e {
        aws_sdk_dynamodb::error::SdkError::ServiceError(service) => format!("{}", service.err()),
        other => format!("{other}"),
    };
    StoreError::Unavailable(Box::new(std::io::Error::other(format!("{text} ({})", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))))
}
