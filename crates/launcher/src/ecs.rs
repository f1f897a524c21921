//! The plan as an ECS task: one task definition per (kind, images, resources),
//! registered once under a family named by its content and reused, and a
//! RunTask whose overrides say which workload it runs. Plain data here;
//! `sluice-store-aws` registers and runs it.
//!
//! Containers mount the task's ephemeral volumes as [`crate::containers`]
//! lays them out (each connector its own, the platform's only in init and
//! orchestrator):
//! - `init` (the orchestrator image, as root) fetches the task's files from
//!   the workload API with the launch key (an ECS secret from Secrets
//!   Manager) and makes the pipes; it must succeed before the others start;
//! - `source` and `destination` run the connectors on the pipes;
//! - `orchestrator` runs the attempt; it is the essential container.
//!
//! A spec, check or discover task has one `connector` container instead,
//! and its orchestrator (`orchestrator ask`) reports the connector's answer.
//!
//! Nothing secret is in the task definition or the overrides: the launch
//! key comes from Secrets Manager, the configs and the workload credential
//! from the workload API, onto the shared volume.

use serde::Serialize;
use sluice_domain::WorkloadType;

use crate::containers::{
    ask_command, connector_command, connector_env, init_script, mounted_in, platform_mode, platform_program, question_command, shared, volumes, INIT_USER, PLATFORM_USER,
    SHARED,
};
use crate::plan::{Container, Runtime, TaskPlan};
use crate::LaunchError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSettings {
    pub orchestrator_image: String,
    /// Images of our reference connectors, by name.
    pub reference_images: std::collections::BTreeMap<String, String>,
    /// The task definitions' family prefix, e.g. `sluice`.
    pub family_prefix: String,
    /// The `awslogs` group and region.
    pub log_group: String,
    pub region: String,
    /// The ARN of the Secrets Manager secret holding the launch key.
    pub launch_key_secret_arn: String,
    /// The workload API sits behind API Gateway's IAM auth: the init and
    /// platform containers sign their calls with the task role.
    pub workload_api_iam: bool,
}

pub use sluice_orchestrator::aws_iam::{wants_iam, AUTH_IAM, AUTH_VAR};

/// What the containers that call the workload API need to sign for IAM auth.
fn workload_api_auth_env(settings: &EcsSettings) -> Vec<(String, String)> {
    match settings.workload_api_iam {
        true => vec![("AWS_REGION".into(), settings.region.clone()), (AUTH_VAR.into(), AUTH_IAM.into())],
        false => vec![],
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EcsContainer {
    pub name: String,
    pub image: String,
    /// Replaces the image's ENTRYPOINT: every image has its own (our
    /// platform image `orchestrator`, Airbyte's their connector), and ECS
    /// would otherwise run `command` as that entrypoint's arguments.
    pub entry_point: Vec<String>,
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// (variable, Secrets Manager ARN): ECS puts the value in the variable.
    pub secrets: Vec<(String, String)>,
    /// (container, condition), e.g. ("init", "SUCCESS").
    pub depends_on: Vec<(String, String)>,
    pub essential: bool,
    pub memory_reservation_mib: i32,
    /// `None`: the image's own user.
    pub user: Option<String>,
    /// (volume, container path): the task's volumes this container mounts.
    pub mounts: Vec<(String, String)>,
}

/// A task definition's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EcsTaskDefinition {
    pub family: String,
    pub cpu: String,
    pub memory: String,
    /// The task's ephemeral volumes, by name.
    pub volumes: Vec<String>,
    pub containers: Vec<EcsContainer>,
    pub log_group: String,
    pub region: String,
}

/// One run of a task definition for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsRun {
    pub definition: EcsTaskDefinition,
    /// Environment added to every container: which workload, where to report.
    pub environment: Vec<(String, String)>,
    /// Recorded on the task, to find it from the workload.
    pub started_by: String,
}

/// 64-bit FNV-1a, in hex: a stable short name for some content (a task
/// definition's, an SQS delivery's receipt).
pub fn fingerprint(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    format!("{hash:016x}")
}

/// A container's shell command as ECS takes it: the shell as the
/// entrypoint, its script and arguments as the command.
fn shell_command(mut command: Vec<String>) -> (Vec<String>, Vec<String>) {
    let rest = command.split_off(2.min(command.len()));
    (command, rest)
}

fn shell(script: String) -> (Vec<String>, Vec<String>) {
    shell_command(vec!["/bin/sh".into(), "-c".into(), script])
}

fn image(container: &Container, settings: &EcsSettings) -> Result<String, LaunchError> {
    match &container.runtime {
        Runtime::Image(image) => Ok(image.clone()),
        Runtime::Reference(name) => settings.reference_images.get(name).cloned().ok_or_else(|| LaunchError(format!("no image is configured for the reference connector {name}"))),
        Runtime::Manifest => Ok(settings.reference_images.get(sluice_connectors::MANIFEST).cloned().unwrap_or_else(crate::plan::manifest_runner_image)),
        Runtime::Pypi(spec) => Err(LaunchError(format!("{} comes from PyPI ({spec}); ECS runs images only: publish it as an image", container.name))),
        Runtime::Executable(path) => Err(LaunchError(format!("{} is the executable {path}; ECS runs images only", container.name))),
    }
}

/// The Fargate size that holds the plan's resources (CPU units, MiB).
fn fargate_size(cpu_millis: u32, memory_mib: u32) -> (u32, u32) {
    let cpu = [256, 512, 1024, 2048, 4096].into_iter().find(|&c| c >= cpu_millis * 1024 / 1000).unwrap_or(4096);
    let min_memory = cpu * 2;
    let memory = memory_mib.max(min_memory).div_ceil(1024) * 1024;
    (cpu, memory.max(512))
}

pub fn ecs_task(plan: &TaskPlan, settings: &EcsSettings) -> Result<EcsRun, LaunchError> {
    let layout = volumes(plan);
    let mounts = |role: &str| -> Vec<(String, String)> { mounted_in(&layout, role).map(|v| (v.name.to_owned(), v.path.clone())).collect() };
    let init = format!("orchestrator fetch-files --dir {SHARED} && {}", init_script(plan));
    let (entry_point, command) = shell(init);
    let mut containers = vec![EcsContainer {
        name: "init".into(),
        image: settings.orchestrator_image.clone(),
        entry_point,
        command,
        environment: workload_api_auth_env(settings),
        secrets: vec![("SLUICE_LAUNCH_KEY".into(), settings.launch_key_secret_arn.clone())],
        depends_on: vec![],
        essential: false,
        memory_reservation_mib: 64,
        user: Some(INIT_USER.into()),
        mounts: mounts("init"),
    }];
    let after_init = || vec![("init".to_owned(), "SUCCESS".to_owned())];
    let connector = |role: &str, container: &Container, command: Vec<String>, share: i32| -> Result<EcsContainer, LaunchError> {
        let mut environment: Vec<(String, String)> = connector_env(plan, container).into_iter().collect();
        environment.sort();
        let (entry_point, command) = shell_command(command);
        Ok(EcsContainer {
            name: role.into(),
            image: image(container, settings)?,
            entry_point,
            command,
            environment,
            secrets: vec![],
            depends_on: after_init(),
            essential: false,
            memory_reservation_mib: share,
            user: None,
            mounts: mounts(role),
        })
    };
    let (cpu, memory, orchestrator) = if plan.kind == WorkloadType::Sync {
        let (source, destination) = match (&plan.source, &plan.destination) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err(LaunchError("a sync plan needs a source and a destination".into())),
        };
        // Each container gets an equal share; ECS needs a memory floor per container.
        let (cpu, memory) = fargate_size(plan.resources.cpu_millis * 3, plan.resources.memory_mib * 2);
        let share = (memory / 4) as i32;
        containers.push(connector("source", source, connector_command("source"), share)?);
        containers.push(connector("destination", destination, connector_command("destination"), share)?);
        let run = format!(
            "exec {} --config {} --workload-api \"$SLUICE_WORKLOAD_API\" --workload-id \"$SLUICE_WORKLOAD_ID\"",
            platform_program(plan),
            shared("sync.json")
        );
        (cpu, memory, run)
    } else {
        let one = plan.connector.as_ref().ok_or_else(|| LaunchError("the plan names no connector".into()))?;
        let (cpu, memory) = fargate_size(plan.resources.cpu_millis, plan.resources.memory_mib);
        containers.push(connector("connector", one, question_command(plan.kind), (memory / 2) as i32)?);
        (cpu, memory, ask_command(plan.kind, &one.name))
    };
    let (entry_point, command) = shell(orchestrator);
    containers.push(EcsContainer {
        name: "orchestrator".into(),
        image: settings.orchestrator_image.clone(),
        entry_point,
        command,
        environment: [("SLUICE_WORKLOAD_TOKEN_FILE".to_owned(), shared("credential"))]
            .into_iter()
            .chain((plan.kind == WorkloadType::Sync).then(|| platform_mode(plan)))
            .chain(workload_api_auth_env(settings))
            .collect(),
        secrets: vec![],
        depends_on: after_init(),
        essential: true,
        memory_reservation_mib: 64,
        user: Some(PLATFORM_USER.into()),
        mounts: mounts("orchestrator"),
    });
    let mut definition = EcsTaskDefinition {
        family: String::new(),
        cpu: cpu.to_string(),
        memory: memory.to_string(),
        volumes: layout.iter().map(|v| v.name.to_owned()).collect(),
        containers,
        log_group: settings.log_group.clone(),
        region: settings.region.clone(),
    };
    let fingerprint = fingerprint(&serde_json::to_string(&definition).expect("plain data"));
    definition.family = format!("{}-{}-{fingerprint}", settings.family_prefix, plan.kind.as_str());
    let environment = vec![("SLUICE_WORKLOAD_ID".into(), plan.workload_id.clone()), ("SLUICE_WORKLOAD_API".into(), plan.workload_api_url.clone())];
    Ok(EcsRun { definition, environment, started_by: plan.workload_id.chars().take(128).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{files, PlanFile, Resources};

    fn settings() -> EcsSettings {
        EcsSettings {
            orchestrator_image: "sluice/orchestrator:1".into(),
            reference_images: Default::default(),
            family_prefix: "sluice".into(),
            log_group: "/sluice/tasks".into(),
            region: "us-east-1".into(),
            launch_key_secret_arn: "arn:aws:secretsmanager:us-east-1:1:secret:sluice/launch-key".into(),
            workload_api_iam: false,
        }
    }

    /// A plan of `kind` with nothing in it but its id, credential and API.
    fn plan(kind: WorkloadType, workload_id: &str, credential: &str) -> TaskPlan {
        TaskPlan {
            workload_id: workload_id.into(),
            kind,
            files: vec![],
            connector: None,
            source: None,
            destination: None,
            resources: Resources::default(),
            data_channel: None,
            workload_api_url: "https://api.example/api/internal/v1".into(),
            credential: credential.into(),
        }
    }

    fn image(name: &str, image: &str) -> Container {
        Container { name: name.into(), runtime: Runtime::Image(image.into()), env: Default::default() }
    }

    #[test]
    fn a_discover_task_is_init_connector_and_an_asking_orchestrator_with_no_secret_in_sight() {
        let plan = TaskPlan {
            files: vec![PlanFile { name: files::CONNECTOR_CONFIG.into(), contents: r#"{"api_key": "sk-very-secret"}"#.into() }],
            connector: Some(image("source-x", "airbyte/source-x:1.0")),
            ..plan(WorkloadType::Discover, "discover_1", "credential-secret")
        };
        let run = ecs_task(&plan, &settings()).unwrap();
        let names: Vec<&str> = run.definition.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["init", "connector", "orchestrator"]);
        assert!(run.definition.family.starts_with("sluice-discover-"), "{}", run.definition.family);
        let connector = &run.definition.containers[1];
        assert_eq!(connector.image, "airbyte/source-x:1.0");
        assert_eq!(connector.entry_point, ["/bin/sh", "-c"], "the image's own entrypoint is replaced");
        assert_eq!(connector.command[2..], ["discover", "--config", "/sluice/connector/config.json"]);
        assert_eq!(connector.mounts, [("connector".to_owned(), "/sluice/connector".to_owned())], "the connector sees its own volume only");
        assert_eq!(connector.depends_on, [("init".to_owned(), "SUCCESS".to_owned())]);
        let orchestrator = &run.definition.containers[2];
        assert!(orchestrator.essential && orchestrator.command[0].contains("orchestrator ask discover --connector-dir /sluice/connector"));
        let everything = format!("{:?}", run);
        assert!(!everything.contains("sk-very-secret") && !everything.contains("credential-secret"), "{everything}");
        // A spec task runs the connector without a config.
        let spec = TaskPlan { kind: WorkloadType::Spec, files: vec![], workload_id: "spec_1".into(), ..plan };
        let run = ecs_task(&spec, &settings()).unwrap();
        assert_eq!(run.definition.containers[1].command[2..], ["spec"]);
        assert!(run.definition.family.starts_with("sluice-spec-"));
    }

    #[test]
    fn a_manifest_connector_runs_on_the_declarative_runners_image_with_the_operators_permission() {
        let mut env = std::collections::BTreeMap::new();
        env.insert("AIRBYTE_ENABLE_UNSAFE_CODE".to_owned(), "true".to_owned());
        let runner = Container { name: "source-test-api".into(), runtime: Runtime::Manifest, env };
        let plan = TaskPlan { connector: Some(runner), ..plan(WorkloadType::Check, "check_2", "c") };
        let mut settings = settings();
        settings.reference_images.insert(sluice_connectors::MANIFEST.into(), "registry.example/sdm:7.39.1".into());
        let run = ecs_task(&plan, &settings).unwrap();
        let connector = &run.definition.containers[1];
        assert_eq!(connector.image, "registry.example/sdm:7.39.1");
        assert!(connector.environment.contains(&("AIRBYTE_ENABLE_UNSAFE_CODE".to_owned(), "true".to_owned())), "{connector:?}");
        // Without a configured one, SLUICE_MANIFEST_RUNNER_IMAGE or Airbyte's image at the CDK version Sluice runs.
        let run = ecs_task(&plan, &self::settings()).unwrap();
        assert_eq!(run.definition.containers[1].image, crate::plan::manifest_runner_image());
    }

    #[test]
    fn behind_iam_auth_the_containers_that_call_the_workload_api_sign_with_the_task_role() {
        let plan = TaskPlan { connector: Some(image("source-x", "airbyte/source-x:1.0")), ..plan(WorkloadType::Check, "check_1", "c") };
        let signing = [("AWS_REGION".to_owned(), "us-east-1".to_owned()), ("SLUICE_WORKLOAD_API_AUTH".to_owned(), "aws-iam".to_owned())];
        let run = ecs_task(&plan, &EcsSettings { workload_api_iam: true, ..settings() }).unwrap();
        let [init, connector, orchestrator] = &run.definition.containers[..] else { panic!("{run:?}") };
        assert_eq!(init.environment, signing);
        assert!(signing.iter().all(|kv| orchestrator.environment.contains(kv)), "{orchestrator:?}");
        assert!(connector.environment.iter().all(|(k, _)| k != "SLUICE_WORKLOAD_API_AUTH"), "the connector never calls the workload API");
        let open = ecs_task(&plan, &settings()).unwrap();
        assert!(format!("{open:?}").find("SLUICE_WORKLOAD_API_AUTH").is_none());
    }

    #[test]
    fn a_socket_mode_sync_runs_the_bookkeeper_and_tells_both_connectors_the_channel() {
        let plan = TaskPlan {
            source: Some(image("source-faker", "sluice/source-faker:1")),
            destination: Some(image("destination-jsonl", "sluice/destination-jsonl:1")),
            data_channel: Some(crate::plan::PlanChannel { format: sluice_protocol::socket::Format::Protobuf, socket_count: 2 }),
            ..plan(WorkloadType::Sync, "c_1_0_sync", "c")
        };
        let run = ecs_task(&plan, &settings()).unwrap();
        let paths = "/sluice/sockets/airbyte_socket_1.sock,/sluice/sockets/airbyte_socket_2.sock";
        for connector in &run.definition.containers[1..3] {
            let env: std::collections::BTreeMap<_, _> = connector.environment.iter().cloned().collect();
            assert_eq!(env["DATA_CHANNEL_MEDIUM"], "SOCKET", "{}", connector.name);
            assert_eq!(env["DATA_CHANNEL_FORMAT"], "PROTOBUF");
            assert_eq!(env["DATA_CHANNEL_SOCKET_PATHS"], paths);
        }
        assert!(run.definition.containers[0].command[0].contains("/sluice/sockets"), "the init step makes the sockets' directory");
        assert!(run.definition.containers[3].command[0].starts_with("exec bookkeeper --config /sluice/sync.json"));
        assert!(run.definition.containers[3].environment.contains(&("PLATFORM_MODE".to_owned(), "BOOKKEEPER".to_owned())));
        let legacy = ecs_task(&TaskPlan { data_channel: None, ..plan }, &settings()).unwrap();
        assert!(legacy.definition.containers[3].command[0].starts_with("exec orchestrator --config"));
    }
}
