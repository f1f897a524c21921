//! The deploy artefacts, checked offline: `template.yaml` passes cfn-lint
//! and `sam validate`; the CDK app in `infra/` synthesizes, passes its
//! assertion tests and cfn-lint, and declares the same resources (type and
//! purpose), parameters, outputs and function settings as the SAM template;
//! and `sluice provision` makes on moto exactly the names and settings the
//! template declares, so that the functions find on a deployed stack what
//! they find in the tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::aws::{moto, provision};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The virtualenv of the AWS SAM CLI and cfn-lint, installed once per cache.
fn sam_tools() -> PathBuf {
    let cache = sluice_connectors::Cache { root: support::cache_dir() };
    cache.python_env("aws-sam-cli", Some("1.170.0"), &mut |_| {}).expect("aws-sam-cli installs from PyPI")
}

fn cfn_lint() -> PathBuf {
    let cache = sluice_connectors::Cache { root: support::cache_dir() };
    cache.python_env("cfn-lint", Some("1.58.0"), &mut |_| {}).expect("cfn-lint installs from PyPI").join("bin/cfn-lint")
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The template as data, its short forms (`!Sub`, `!Ref`) in their long ones.
fn template() -> Value {
    let script = "import json, sys\nfrom cfnlint.decode import decode\ntemplate, errors = decode(sys.argv[1])\nassert not errors, errors\nprint(json.dumps(template, default=str))";
    let text = run(Command::new(cfn_lint().with_file_name("python")).args(["-c", script]).arg(repo().join("template.yaml")));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_template_passes_cfn_lint_and_sam_validate() {
    run(Command::new(cfn_lint()).current_dir(repo()).args(["--non-zero-exit-code", "informational", "template.yaml"]));
    let validated = run(Command::new(sam_tools().join("bin/sam"))
        .current_dir(repo())
        .args(["validate", "--template", "template.yaml", "--region", "us-east-1"])
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test"));
    assert!(validated.contains("is a valid SAM Template"), "{validated}");
}

/// `${Prefix}` in a declared name, made concrete.
fn name(value: &Value, prefix: &str) -> String {
    if value["Ref"] == "Prefix" {
        return prefix.to_owned();
    }
    let text = value["Fn::Sub"].as_str().or(value.as_str()).unwrap_or_else(|| panic!("not a name: {value}"));
    text.replace("${Prefix}", prefix)
}

fn by_purpose<'a>(template: &'a Value, purpose: &str) -> &'a Value {
    let resources = template["Resources"].as_object().unwrap();
    resources.values().find(|r| r["Metadata"]["Sluice::Purpose"] == purpose).unwrap_or_else(|| panic!("the template has no {purpose}"))
}

/// A table's keys and indexes in one shape, from the template or from DynamoDB.
fn table_shape(keys: Vec<(String, String)>, attributes: Vec<(String, String)>, mut indexes: Vec<(String, Vec<(String, String)>)>) -> Value {
    let mut attributes = attributes;
    attributes.sort();
    indexes.sort();
    json!({"keys": keys, "attributes": attributes, "indexes": indexes})
}

#[test]
fn sluice_provision_makes_what_the_template_declares() {
    let template = template();
    let prefix = format!("tpl{}", std::process::id());
    provision(&prefix);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        for purpose in ["config-table", "jobs-table", "workloads-table"] {
            let declared = &by_purpose(&template, purpose)["Properties"];
            let table_name = name(&declared["TableName"], &prefix);
            let pairs = |list: &Value, a: &str, b: &str| -> Vec<(String, String)> {
                list.as_array().unwrap().iter().map(|k| (k[a].as_str().unwrap().to_owned(), k[b].as_str().unwrap().to_owned())).collect()
            };
            let expected = table_shape(
                pairs(&declared["KeySchema"], "AttributeName", "KeyType"),
                pairs(&declared["AttributeDefinitions"], "AttributeName", "AttributeType"),
                declared["GlobalSecondaryIndexes"].as_array().unwrap().iter().map(|i| (i["IndexName"].as_str().unwrap().to_owned(), pairs(&i["KeySchema"], "AttributeName", "KeyType"))).collect(),
            );
            let table = dynamo.describe_table().table_name(&table_name).send().await.unwrap_or_else(|e| panic!("{table_name}: {e:?}")).table.unwrap();
            let key = |k: &aws_sdk_dynamodb::types::KeySchemaElement| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned());
            let actual = table_shape(
                table.key_schema().iter().map(key).collect(),
                table.attribute_definitions().iter().map(|a| (a.attribute_name().to_owned(), a.attribute_type().as_str().to_owned())).collect(),
                table.global_secondary_indexes().iter().map(|i| (i.index_name().unwrap().to_owned(), i.key_schema().iter().map(key).collect())).collect(),
            );
            assert_eq!(actual, expected, "{table_name}: provisioned vs declared");
            assert_eq!(table.billing_mode_summary().and_then(|b| b.billing_mode()).map(|m| m.as_str()), Some("PAY_PER_REQUEST"));
            let ttl = dynamo.describe_time_to_live().table_name(&table_name).send().await.unwrap();
            let ttl_attribute = ttl.time_to_live_description().and_then(|t| t.attribute_name()).map(str::to_owned);
            assert_eq!(ttl_attribute.as_deref(), declared["TimeToLiveSpecification"]["AttributeName"].as_str(), "{table_name}: TTL");
        }

        let sqs = aws_sdk_sqs::Client::new(&config);
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let queue = &by_purpose(&template, "workload-queue")["Properties"];
        let dlq = &by_purpose(&template, "workload-dead-letter-queue")["Properties"];
        let attributes = |queue_name: String| {
            let sqs = sqs.clone();
            async move {
                let url = sqs.get_queue_url().queue_name(&queue_name).send().await.unwrap_or_else(|e| panic!("{queue_name}: {e:?}")).queue_url.unwrap();
                sqs.get_queue_attributes().queue_url(url).attribute_names(A::All).send().await.unwrap().attributes.unwrap()
            }
        };
        let made = attributes(name(&queue["QueueName"], &prefix)).await;
        assert_eq!(made[&A::VisibilityTimeout], queue["VisibilityTimeout"].to_string());
        let redrive: Value = serde_json::from_str(&made[&A::RedrivePolicy]).unwrap();
        assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), queue["RedrivePolicy"]["maxReceiveCount"].to_string());
        assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(&name(&dlq["QueueName"], &prefix)));
        let made_dlq = attributes(name(&dlq["QueueName"], &prefix)).await;
        assert_eq!(made_dlq[&A::MessageRetentionPeriod], dlq["MessageRetentionPeriod"].to_string());

        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        for purpose in ["attempt-logs", "task-logs"] {
            let group = name(&by_purpose(&template, purpose)["Properties"]["LogGroupName"], &prefix);
            let found = logs.describe_log_groups().log_group_name_prefix(&group).send().await.unwrap();
            let made = found.log_groups().iter().find(|g| g.log_group_name() == Some(group.as_str())).unwrap_or_else(|| panic!("no log group {group}"));
            let default_days = template["Parameters"]["LogRetentionDays"]["Default"].as_i64();
            assert_eq!(made.retention_in_days().map(i64::from), default_days, "{group}: retention");
        }
        let cluster = name(&by_purpose(&template, "task-cluster")["Properties"]["ClusterName"], &prefix);
        let clusters = aws_sdk_ecs::Client::new(&config).describe_clusters().clusters(&cluster).send().await.unwrap();
        assert_eq!(clusters.clusters().first().and_then(|c| c.status()), Some("ACTIVE"), "cluster {cluster}");
        let bus = name(&by_purpose(&template, "job-event-bus")["Properties"]["Name"], &prefix);
        aws_sdk_eventbridge::Client::new(&config).describe_event_bus().name(&bus).send().await.unwrap_or_else(|e| panic!("bus {bus}: {e:?}"));
        let group = name(&by_purpose(&template, "connection-schedule-group")["Properties"]["Name"], &prefix);
        aws_sdk_scheduler::Client::new(&config).get_schedule_group().name(&group).send().await.unwrap_or_else(|e| panic!("schedule group {group}: {e:?}"));
        let secret = name(&by_purpose(&template, "launch-key")["Properties"]["Name"], &prefix);
        aws_sdk_secretsmanager::Client::new(&config).describe_secret().secret_id(&secret).send().await.unwrap_or_else(|e| panic!("secret {secret}: {e:?}"));

        // The names the functions derive from SLUICE_PREFIX are the template's.
        let names = sluice_store_aws::Names::with_prefix(&prefix);
        assert_eq!(
            [names.config_table, names.jobs_table, names.workloads_table, names.queue, names.dead_letter_queue, names.event_bus, names.schedule_group, names.cluster, names.log_group, names.task_log_group],
            [
                ("config-table", "TableName"),
                ("jobs-table", "TableName"),
                ("workloads-table", "TableName"),
                ("workload-queue", "QueueName"),
                ("workload-dead-letter-queue", "QueueName"),
                ("job-event-bus", "Name"),
                ("connection-schedule-group", "Name"),
                ("task-cluster", "ClusterName"),
                ("attempt-logs", "LogGroupName"),
                ("task-logs", "LogGroupName"),
            ]
            .map(|(purpose, field)| name(&by_purpose(&template, purpose)["Properties"][field], &prefix))
        );
    });
}

fn sam_type(kind: &str) -> &str {
    match kind {
        "AWS::Serverless::Function" => "AWS::Lambda::Function",
        "AWS::Serverless::Api" => "AWS::ApiGateway::RestApi",
        other => other,
    }
}

/// (type, purpose) of every resource that declares a purpose.
fn purposes(template: &Value) -> std::collections::BTreeSet<(String, String)> {
    let resources = template["Resources"].as_object().unwrap();
    resources
        .values()
        .filter_map(|r| Some((sam_type(r["Type"].as_str()?).to_owned(), r["Metadata"]["Sluice::Purpose"].as_str()?.to_owned())))
        .collect()
}

fn keys(value: &Value) -> std::collections::BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

/// Each function's environment variable names, by purpose.
fn function_settings(template: &Value, globals: &Value) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let resources = template["Resources"].as_object().unwrap();
    resources
        .values()
        .filter(|r| sam_type(r["Type"].as_str().unwrap_or_default()) == "AWS::Lambda::Function")
        .filter_map(|r| {
            let mut names = keys(&globals["Function"]["Environment"]["Variables"]);
            names.extend(keys(&r["Properties"]["Environment"]["Variables"]));
            Some((r["Metadata"]["Sluice::Purpose"].as_str()?.to_owned(), names))
        })
        .collect()
}

#[test]
fn the_cdk_app_synthesizes_passes_its_assertions_and_matches_the_sam_template() {
    let infra = repo().join("infra");
    if !infra.join("node_modules/aws-cdk-lib").exists() {
        run(Command::new("npm").current_dir(&infra).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]));
    }
    run(Command::new("node").current_dir(&infra).args(["--require", "ts-node/register", "--test"]).arg("test/sluice-stack.test.ts").env("TS_NODE_TRANSPILE_ONLY", "1"));

    // Synthesized on stand-in packages: what is compared is the stack, not the binaries.
    let scratch = support::Scratch::new();
    for f in ["config-api", "workload-api", "scheduler", "launcher", "monitor"] {
        std::fs::create_dir_all(scratch.path(&format!("lambda/{f}"))).unwrap();
        std::fs::write(scratch.path(&format!("lambda/{f}/bootstrap")), "#!/bin/sh\n").unwrap();
    }
    let out = scratch.path("cdk.out");
    run(Command::new(infra.join("node_modules/.bin/cdk"))
        .current_dir(&infra)
        .args(["synth", "--quiet", "--no-notices", "-c"])
        .arg(format!("lambdaDir={}", scratch.path("lambda").display()))
        .arg("-o")
        .arg(&out)
        .env("CDK_DEFAULT_ACCOUNT", "000000000000")
        .env("CDK_DEFAULT_REGION", "us-east-1")
        .env("CDK_DISABLE_VERSION_CHECK", "1"));
    let synthesized = out.join("sluice.template.json");
    run(Command::new(cfn_lint()).args(["--non-zero-exit-code", "error"]).arg(&synthesized));

    let cdk: Value = serde_json::from_str(&std::fs::read_to_string(&synthesized).unwrap()).unwrap();
    let sam = template();
    assert_eq!(purposes(&cdk), purposes(&sam), "the CDK stack (left) and template.yaml (right) declare different resources");
    let own_parameters = |t: &Value| keys(&t["Parameters"]).into_iter().filter(|p| p != "BootstrapVersion").collect::<std::collections::BTreeSet<_>>();
    assert_eq!(own_parameters(&cdk), own_parameters(&sam), "parameters");
    assert_eq!(keys(&cdk["Outputs"]), keys(&sam["Outputs"]), "outputs");
    assert_eq!(function_settings(&cdk, &Value::Null), function_settings(&sam, &sam["Globals"]), "the functions' environment");
    assert_eq!(data_lake_grant(&cdk), data_lake_grant(&sam), "the task role's grant on the data lake");

    // Each route's authorization as API Gateway gets it: SAM's only after its transform.
    let transformed = run(Command::new(sam_tools().join("bin/python")).arg(repo().join("tests/fixtures/sam_transform.py")).arg(repo().join("template.yaml")));
    let transformed: Value = serde_json::from_str(&transformed).unwrap();
    let expected: std::collections::BTreeMap<String, String> =
        [
            ("ANY /api/internal/v1/{proxy+}", "AWS_IAM"),
            ("ANY /api/public/v1/{proxy+}", "NONE"),
            ("ANY /v1/{proxy+}", "NONE"),
            ("GET /", "NONE"),
            ("GET /assets/{proxy+}", "NONE"),
        ]
        .map(|(p, a)| (p.to_owned(), a.to_owned()))
        .into();
    assert_eq!(sam_routes(&transformed), expected, "template.yaml's routes, after SAM's transform");
    assert_eq!(cdk_routes(&cdk), expected, "the CDK stack's routes");
}

/// The data lake's grant: its condition, and each statement's actions and
/// whether it is bounded by the prefix.
fn data_lake_grant(template: &Value) -> (String, std::collections::BTreeMap<String, (std::collections::BTreeSet<String>, bool)>) {
    let grant = by_purpose(template, "data-lake-grant");
    let condition = grant["Condition"].as_str().expect("the grant is conditional").to_owned();
    let statements = grant["Properties"]["PolicyDocument"]["Statement"].as_array().unwrap();
    let mut found = std::collections::BTreeMap::new();
    for statement in statements {
        let actions = match &statement["Action"] {
            Value::String(a) => [a.clone()].into(),
            list => list.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        };
        let bounded = statement.to_string().contains("DataLakePrefix");
        found.insert(statement["Sid"].as_str().unwrap().to_owned(), (actions, bounded));
    }
    assert_eq!(found.len(), 2, "{grant}");
    assert!(found.values().all(|(_, bounded)| *bounded), "every statement is bounded by the prefix: {grant}");
    (condition, found)
}

/// Each route (`METHOD path`) of the SAM template's API and its
/// authorization. An integration with credentials would invoke the function
/// as the caller (SAM's default for AWS_IAM), which the task role may not do.
fn sam_routes(transformed: &Value) -> std::collections::BTreeMap<String, String> {
    let api = transformed["Resources"].as_object().unwrap().values().find(|r| r["Type"] == "AWS::ApiGateway::RestApi").unwrap();
    assert_eq!(api["Properties"]["MinimumCompressionSize"], 1024, "API Gateway compresses the functions' answers");
    let mut routes = std::collections::BTreeMap::new();
    for (path, methods) in api["Properties"]["Body"]["paths"].as_object().unwrap() {
        for (verb, method) in methods.as_object().unwrap() {
            assert!(method["x-amazon-apigateway-integration"]["credentials"].is_null(), "{path} invokes its function with the caller's credentials");
            let auth = if method["security"].to_string().contains("AWS_IAM") { "AWS_IAM" } else { "NONE" };
            let verb = if verb == "x-amazon-apigateway-any-method" { "ANY".to_owned() } else { verb.to_uppercase() };
            routes.insert(format!("{verb} {path}"), auth.to_owned());
        }
    }
    routes
}

/// Each method of the CDK stack's API (`METHOD path`), and its authorization.
fn cdk_routes(cdk: &Value) -> std::collections::BTreeMap<String, String> {
    let resources = cdk["Resources"].as_object().unwrap();
    let path_of = |start: &str| {
        let mut id = start.to_owned();
        let mut parts = Vec::new();
        while let Some(r) = resources.get(&id).filter(|r| r["Type"] == "AWS::ApiGateway::Resource") {
            parts.push(r["Properties"]["PathPart"].as_str().unwrap().to_owned());
            id = r["Properties"]["ParentId"]["Ref"].as_str().unwrap_or("").to_owned();
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    };
    let api = resources.values().find(|r| r["Type"] == "AWS::ApiGateway::RestApi").unwrap();
    assert_eq!(api["Properties"]["MinimumCompressionSize"], 1024, "API Gateway compresses the functions' answers");
    resources
        .values()
        .filter(|r| r["Type"] == "AWS::ApiGateway::Method" && r["Properties"]["HttpMethod"] != "OPTIONS")
        .map(|m| {
            assert!(m["Properties"]["Integration"]["Credentials"].is_null(), "{m}");
            // The root resource is the API's own (`Fn::GetAtt` RootResourceId), not a `Ref`.
            let path = m["Properties"]["ResourceId"]["Ref"].as_str().map(path_of).unwrap_or_else(|| "/".to_owned());
            let verb = m["Properties"]["HttpMethod"].as_str().unwrap();
            (format!("{verb} {path}"), m["Properties"]["AuthorizationType"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `localstack/docker-compose.yml`: it parses, names only flags `sluice`
/// has, asks LocalStack for every service the platform uses, and its
/// provisioning command makes on moto what the template declares but the
/// ECS cluster. (No Docker engine runs here to try `docker compose up`.)
#[test]
fn the_localstack_compose_file_provisions_everything_but_ecs() {
    let script = "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let text = run(Command::new(cfn_lint().with_file_name("python")).args(["-c", script]).arg(repo().join("localstack/docker-compose.yml")));
    let compose: Value = serde_json::from_str(&text).unwrap();
    let services: Vec<&str> = compose["services"]["localstack"]["environment"]["SERVICES"].as_str().unwrap().split(',').collect();
    for needed in ["dynamodb", "sqs", "secretsmanager", "events", "scheduler", "logs"] {
        assert!(services.contains(&needed), "LocalStack must run {needed}: {services:?}");
    }
    let sluice_service = &compose["services"]["sluice"];
    assert_eq!(sluice_service["environment"]["AWS_ENDPOINT_URL"], "http://localstack:4566");
    assert_eq!(sluice_service["build"]["dockerfile"], "task-images/sluice.Dockerfile");
    assert!(repo().join("task-images/sluice.Dockerfile").exists());
    let command = sluice_service["command"][0].as_str().unwrap();
    let (provision_line, up_line) = command.split_once("&&").unwrap();
    // Every flag the compose file passes is one the commands take.
    for (line, verb) in [(provision_line, "provision"), (up_line, "up")] {
        let help = run(support::sluice().args([verb, "--help"]));
        for flag in line.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "`sluice {verb}` has no {flag}");
        }
    }

    // The provisioning command, against moto instead of LocalStack.
    let prefix = format!("ls{}", std::process::id());
    let scratch = support::Scratch::new();
    let credentials = scratch.path("credentials.json");
    let mut args: Vec<String> = provision_line.split_whitespace().skip(1).map(String::from).collect();
    let at = |flag: &str, args: &[String]| args.iter().position(|a| a == flag).unwrap() + 1;
    let p = at("--prefix", &args);
    args[p] = prefix.clone();
    let c = at("--credentials-file", &args);
    args[c] = credentials.display().to_string();
    run(support::sluice().args(&args).envs(support::aws::aws_env()));
    assert!(std::fs::read_to_string(&credentials).unwrap().contains("client_secret"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = sluice_store_aws::moto::sdk_config(moto()).await;
        let names = sluice_store_aws::Names::with_prefix(&prefix);
        let clusters = aws_sdk_ecs::Client::new(&config).describe_clusters().clusters(&names.cluster).send().await.unwrap();
        assert!(clusters.clusters().iter().all(|c| c.status() != Some("ACTIVE")), "no ECS cluster with --no-ecs");
        let tables = aws_sdk_dynamodb::Client::new(&config).list_tables().send().await.unwrap();
        for table in [&names.config_table, &names.jobs_table, &names.workloads_table] {
            assert!(tables.table_names().contains(table), "{table} was provisioned");
        }
    });
}
