//! Creates what the AWS adapters need, idempotently: running it twice
//! changes nothing. `sluice provision` and the tests use it; the SAM and CDK
//! stacks declare the same resources.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use sluice_store::StoreError;

use crate::Names;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

/// An attribute of a key, and its type.
type KeyAttribute<'a> = (&'a str, ScalarAttributeType);

/// A table: its partition key `pk` (string) and its GSIs as
/// (name, partition attribute, optional sort attribute).
struct Table<'a> {
    name: &'a str,
    indexes: Vec<(&'a str, KeyAttribute<'a>, Option<KeyAttribute<'a>>)>,
}

/// How many messages a workload delivery may fail before it goes to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// The name of the secret holding the launch key.
pub fn launch_key_name(secrets_prefix: &str) -> String {
    format!("{secrets_prefix}/launch-key")
}

/// How long attempt and task logs are kept (template.yaml's default).
pub const LOG_RETENTION_DAYS: i32 = 30;

/// What `provision` made or found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    pub queue_url: String,
}

pub async fn provision(config: &aws_config::SdkConfig, names: &Names) -> Result<Provisioned, StoreError> {
    provision_with(config, names, WithEcs::Cluster).await
}

/// Whether to make the ECS cluster: LocalStack's community edition has no
/// ECS, and there tasks run with the local or Docker executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithEcs {
    Cluster,
    NoCluster,
}

pub async fn provision_with(config: &aws_config::SdkConfig, names: &Names, ecs: WithEcs) -> Result<Provisioned, StoreError> {
    use ScalarAttributeType::{N, S};
    let mut done = Provisioned::default();
    let tables = [
        Table { name: &names.config_table, indexes: vec![("by-kind", ("kind", S), Some(("seq", N))), ("by-workspace", ("kindWs", S), Some(("seq", N)))] },
        Table {
            name: &names.jobs_table,
            indexes: vec![("by-connection", ("connectionId", S), Some(("id", N))), ("by-status", ("status", S), Some(("id", N))), ("by-all", ("entity", S), Some(("id", N)))],
        },
        Table { name: &names.workloads_table, indexes: vec![("by-mutex", ("activeMutex", S), None), ("by-deadline", ("active", S), Some(("deadline", N)))] },
    ];
    let dynamo = aws_sdk_dynamodb::Client::new(config);
    for table in &tables {
        let mut attributes = vec![("pk", S)];
        for (_, partition, sort) in &table.indexes {
            attributes.push(partition.clone());
            attributes.extend(sort.clone());
        }
        attributes.sort_by(|a, b| a.0.cmp(b.0));
        attributes.dedup_by(|a, b| a.0 == b.0);
        let mut create = dynamo
            .create_table()
            .table_name(table.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().map_err(failed)?);
        for (name, kind) in attributes {
            create = create.attribute_definitions(AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().map_err(failed)?);
        }
        for (index, (partition, _), sort) in &table.indexes {
            let mut keys = vec![KeySchemaElement::builder().attribute_name(*partition).key_type(KeyType::Hash).build().map_err(failed)?];
            if let Some((sort, _)) = sort {
                keys.push(KeySchemaElement::builder().attribute_name(*sort).key_type(KeyType::Range).build().map_err(failed)?);
            }
            let gsi = GlobalSecondaryIndex::builder()
                .index_name(*index)
                .set_key_schema(Some(keys))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(failed)?;
            create = create.global_secondary_indexes(gsi);
        }
        match create.send().await {
            Ok(_) => done.created.push(format!("table {}", table.name)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => done.existing.push(format!("table {}", table.name)),
            Err(e) => return Err(failed(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }
    // Finished workloads expire by themselves on AWS.
    let ttl = TimeToLiveSpecification::builder().attribute_name("expiresAt").enabled(true).build().map_err(failed)?;
    if let Err(e) = dynamo.update_time_to_live().table_name(&names.workloads_table).time_to_live_specification(ttl).send().await {
        let already = e.as_service_error().map(|s| s.to_string()).unwrap_or_default().contains("already enabled");
        if !already {
            return Err(failed(aws_sdk_dynamodb::error::DisplayErrorContext(e)));
        }
    }

    let sqs = aws_sdk_sqs::Client::new(config);
    let dlq = sqs
        .create_queue()
        .queue_name(&names.dead_letter_queue)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let dlq_url = dlq.queue_url.ok_or_else(|| failed("SQS gave no URL for the dead-letter queue"))?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| failed("SQS gave no ARN for the dead-letter queue"))?;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{MAX_RECEIVES}"}}"#);
    let queue = sqs
        .create_queue()
        .queue_name(&names.queue)
        // As template.yaml: six times the launcher function's timeout, as Lambda's SQS event source wants.
        .attributes(QueueAttributeName::VisibilityTimeout, "180")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    done.queue_url = queue.queue_url.ok_or_else(|| failed("SQS gave no URL for the workload queue"))?;

    let scheduler = aws_sdk_scheduler::Client::new(config);
    // Looked up first: not every endpoint refuses a second group of the same name.
    let group = scheduler.get_schedule_group().name(&names.schedule_group).send().await;
    match group {
        Ok(_) => done.existing.push(format!("schedule group {}", names.schedule_group)),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            match scheduler.create_schedule_group().name(&names.schedule_group).send().await {
                Ok(_) => done.created.push(format!("schedule group {}", names.schedule_group)),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => done.existing.push(format!("schedule group {}", names.schedule_group)),
                Err(e) => return Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
            }
        }
        Err(e) => return Err(failed(aws_sdk_scheduler::error::DisplayErrorContext(e))),
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    for group in [&names.log_group, &names.task_log_group] {
        match logs.create_log_group().log_group_name(group).send().await {
            Ok(_) => done.created.push(format!("log group {group}")),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => done.existing.push(format!("log group {group}")),
            Err(e) => return Err(failed(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e))),
        }
        // Logs expire by themselves: the retention the monitor enforces on one machine.
        logs.put_retention_policy()
            .log_group_name(group)
            .retention_in_days(LOG_RETENTION_DAYS)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e)))?;
    }
    if ecs == WithEcs::Cluster {
        let ecs = aws_sdk_ecs::Client::new(config);
        let clusters = ecs.describe_clusters().clusters(&names.cluster).send().await.map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
        if clusters.clusters().iter().any(|c| c.status() == Some("ACTIVE")) {
            done.existing.push(format!("cluster {}", names.cluster));
        } else {
            ecs.create_cluster().cluster_name(&names.cluster).send().await.map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
            done.created.push(format!("cluster {}", names.cluster));
        }
    }
    // The key a task's init step presents to fetch its files (an ECS secret in the task definition).
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    let launch_key = launch_key_name(&names.secrets_prefix);
    match secrets.describe_secret().secret_id(&launch_key).send().await {
        Ok(_) => done.existing.push(format!("secret {launch_key}")),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            let random = secrets
                .get_random_password()
                .password_length(48)
                .exclude_punctuation(true)
                .send()
                .await
                .map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
            let value = random.random_password.ok_or_else(|| failed("Secrets Manager gave no random password"))?;
            secrets.create_secret().name(&launch_key).secret_string(value).send().await.map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
            done.created.push(format!("secret {launch_key}"));
        }
        Err(e) => return Err(failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
    }
    let events = aws_sdk_eventbridge::Client::new(config);
    match events.create_event_bus().name(&names.event_bus).send().await {
        Ok(_) => done.created.push(format!("event bus {}", names.event_bus)),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => done.existing.push(format!("event bus {}", names.event_bus)),
        Err(e) => return Err(failed(aws_sdk_eventbridge::error::DisplayErrorContext(e))),
    }
    done.existing.push(format!("queues {} and {}", names.queue, names.dead_letter_queue));
    Ok(done)
}

/// The ARN of the launch key's secret, which task definitions name.
pub async fn launch_key_arn(config: &aws_config::SdkConfig, names: &Names) -> Result<String, StoreError> {
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    let described = secrets
        .describe_secret()
        .secret_id(launch_key_name(&names.secrets_prefix))
        .send()
        .await
        .map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
    described.arn.ok_or_else(|| failed("Secrets Manager gave no ARN for the launch key"))
}
