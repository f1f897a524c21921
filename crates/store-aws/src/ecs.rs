//! The launcher's ECS side: task definitions registered once per content
//! (the family names it) and reused, RunTask on Fargate with the
//! workload's environment as overrides, StopTask to cancel.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride, KeyValuePair,
    LaunchType, LogConfiguration, LogDriver, MountPoint, NetworkConfiguration, NetworkMode, Secret, TaskOverride, Volume,
};
use aws_sdk_ecs::Client;
use sluice_launcher::ecs::{EcsRun, EcsTaskDefinition};
use sluice_store::StoreError;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

/// Where tasks run and with which roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsPlacement {
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    pub assign_public_ip: bool,
}

#[derive(Clone)]
pub struct EcsTasks {
    client: Client,
    placement: EcsPlacement,
}

impl EcsTasks {
    pub fn new(config: &aws_config::SdkConfig, placement: EcsPlacement) -> Self {
        EcsTasks { client: Client::new(config), placement }
    }

    /// For reading and stopping a cluster's tasks only: nothing is launched with it.
    pub fn in_cluster(config: &aws_config::SdkConfig, cluster: &str) -> Self {
        let placement = EcsPlacement {
            cluster: cluster.to_owned(),
            subnets: vec![],
            security_groups: vec![],
            execution_role_arn: String::new(),
            task_role_arn: String::new(),
            assign_public_ip: false,
        };
        EcsTasks::new(config, placement)
    }

    /// The cluster's tasks of a desired status, described.
    async fn tasks(&self, status: aws_sdk_ecs::types::DesiredStatus) -> Result<Vec<aws_sdk_ecs::types::Task>, StoreError> {
        let mut arns = Vec::new();
        let mut pages = self.client.list_tasks().cluster(&self.placement.cluster).desired_status(status).into_paginator().send();
        while let Some(page) = pages.next().await {
            arns.extend(page.map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?.task_arns().iter().cloned());
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let described = self
                .client
                .describe_tasks()
                .cluster(&self.placement.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
            tasks.extend(described.tasks().iter().cloned());
        }
        Ok(tasks)
    }

    /// The cluster's tasks meant to be running: (task ARN, `startedBy`, i.e. the workload).
    pub async fn running(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tasks = self.tasks(aws_sdk_ecs::types::DesiredStatus::Running).await?;
        Ok(tasks.iter().filter_map(|t| Some((t.task_arn()?.to_owned(), t.started_by()?.to_owned()))).collect())
    }

    /// The cluster's tasks that have not stopped yet, stopping ones
    /// included (told to stop, ECS still runs them): (task ARN, `startedBy`).
    pub async fn not_stopped(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        for status in [aws_sdk_ecs::types::DesiredStatus::Running, aws_sdk_ecs::types::DesiredStatus::Stopped] {
            for t in self.tasks(status).await? {
                if let (Some(arn), Some(by), false) = (t.task_arn(), t.started_by(), t.last_status() == Some("STOPPED")) {
                    found.push((arn.to_owned(), by.to_owned()));
                }
            }
        }
        Ok(found)
    }

    /// The cluster's stopped tasks (ECS shows them for about an hour): (task
    /// ARN, `startedBy`, why it stopped: the task's reason and each
    /// container's exit or reason).
    pub async fn stopped(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut tasks = Vec::new();
        for t in &self.tasks(aws_sdk_ecs::types::DesiredStatus::Stopped).await? {
            let (Some(arn), Some(workload)) = (t.task_arn(), t.started_by()) else { continue };
            let mut why = t.stopped_reason().unwrap_or("no reason given").to_owned();
            for c in t.containers() {
                match (c.name(), c.exit_code(), c.reason()) {
                    (Some(name), _, Some(reason)) => why.push_str(&format!("; {name}: {reason}")),
                    (Some(name), Some(code), None) if code != 0 => why.push_str(&format!("; {name} exited {code}")),
                    _ => {}
                }
            }
            tasks.push((arn.to_owned(), workload.to_owned(), why));
        }
        Ok(tasks)
    }

    /// The ARN of the definition's newest revision, registering it first if
    /// its family does not exist yet.
    pub async fn ensure_definition(&self, definition: &EcsTaskDefinition) -> Result<String, StoreError> {
        let existing = self.client.describe_task_definition().task_definition(&definition.family).send().await;
        if let Ok(found) = existing {
            if let Some(arn) = found.task_definition.and_then(|d| d.task_definition_arn) {
                return Ok(arn);
            }
        }
        let mut register = self
            .client
            .register_task_definition()
            .family(&definition.family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(&definition.cpu)
            .memory(&definition.memory)
            .execution_role_arn(&self.placement.execution_role_arn)
            .task_role_arn(&self.placement.task_role_arn)
            .set_volumes(Some(definition.volumes.iter().map(|v| Volume::builder().name(v).build()).collect()));
        for c in &definition.containers {
            let logs = LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", &definition.log_group)
                .options("awslogs-region", &definition.region)
                .options("awslogs-stream-prefix", &c.name)
                .build()
                .map_err(failed)?;
            let mut container = ContainerDefinition::builder()
                .name(&c.name)
                .image(&c.image)
                .set_entry_point(Some(c.entry_point.clone()))
                .set_command(Some(c.command.clone()))
                .essential(c.essential)
                .memory_reservation(c.memory_reservation_mib)
                .set_mount_points(Some(
                    c.mounts.iter().map(|(volume, path)| MountPoint::builder().source_volume(volume).container_path(path).read_only(false).build()).collect(),
                ))
                .set_user(c.user.clone())
                .log_configuration(logs);
            for (name, value) in &c.environment {
                container = container.environment(KeyValuePair::builder().name(name).value(value).build());
            }
            for (name, arn) in &c.secrets {
                container = container.secrets(Secret::builder().name(name).value_from(arn).build().map_err(failed)?);
            }
            for (name, condition) in &c.depends_on {
                let condition = ContainerCondition::from(condition.as_str());
                container = container.depends_on(ContainerDependency::builder().container_name(name).condition(condition).build().map_err(failed)?);
            }
            register = register.container_definitions(container.build());
        }
        let registered = register.send().await.map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
        registered.task_definition.and_then(|d| d.task_definition_arn).ok_or_else(|| failed("ECS registered the task definition without an ARN"))
    }

    /// Starts the task; returns its ARN.
    pub async fn run(&self, run: &EcsRun) -> Result<String, StoreError> {
        let definition = self.ensure_definition(&run.definition).await?;
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.placement.subnets.clone()))
            .set_security_groups(Some(self.placement.security_groups.clone()))
            .assign_public_ip(if self.placement.assign_public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled })
            .build()
            .map_err(failed)?;
        let environment: Vec<KeyValuePair> = run.environment.iter().map(|(k, v)| KeyValuePair::builder().name(k).value(v).build()).collect();
        let mut overrides = TaskOverride::builder();
        for c in &run.definition.containers {
            overrides = overrides.container_overrides(ContainerOverride::builder().name(&c.name).set_environment(Some(environment.clone())).build());
        }
        let started = self
            .client
            .run_task()
            .cluster(&self.placement.cluster)
            .task_definition(definition)
            .launch_type(LaunchType::Fargate)
            .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
            .overrides(overrides.build())
            .started_by(&run.started_by)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
        if let Some(failure) = started.failures().first() {
            return Err(failed(format!("ECS could not start the task: {} {}", failure.reason().unwrap_or_default(), failure.detail().unwrap_or_default())));
        }
        started.tasks().first().and_then(|t| t.task_arn().map(str::to_owned)).ok_or_else(|| failed("ECS started no task"))
    }

    /// Stops a task (a cancel); stopping one that already stopped is fine.
    pub async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), StoreError> {
        self.client
            .stop_task()
            .cluster(&self.placement.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_ecs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
