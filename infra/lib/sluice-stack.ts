// Sluice's AWS stack, the same resources as ../template.yaml (SAM): every
// resource carries its purpose in Metadata `Sluice::Purpose`, which
// tests/deploy.rs compares between the two stacks so that they cannot drift.
import * as path from 'path';
import * as cdk from 'aws-cdk-lib';
import { Construct } from 'constructs';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as secrets from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';

/** Marks a construct's CloudFormation resource with its purpose. */
function purpose(construct: Construct, what: string): void {
  const resource = (construct.node.defaultChild ?? construct) as cdk.CfnResource;
  resource.addMetadata('Sluice::Purpose', what);
}

export interface SluiceStackProps extends cdk.StackProps {
  /** Where task-images/build-lambdas.sh put the functions (a `<name>/bootstrap` each). */
  lambdaDir?: string;
}

export class SluiceStack extends cdk.Stack {
  constructor(scope: Construct, id: string, props: SluiceStackProps = {}) {
    super(scope, id, props);
    const lambdaDir = props.lambdaDir ?? path.join(__dirname, '../../target/functions');

    const prefixParam = new cdk.CfnParameter(this, 'Prefix', {
      default: 'sluice',
      allowedPattern: '^[a-z][a-z0-9-]{1,30}$',
      description: 'The prefix of every table, queue, bus, schedule group, cluster, log group and secret.',
    });
    const architecture = new cdk.CfnParameter(this, 'Architecture', {
      default: 'arm64',
      allowedValues: ['arm64', 'x86_64'],
      description: "The functions' architecture; build them for it (task-images/build-lambdas.sh).",
    });
    const subnets = new cdk.CfnParameter(this, 'TaskSubnets', { type: 'List<AWS::EC2::Subnet::Id>', description: 'The subnets Fargate tasks run in.' });
    const securityGroups = new cdk.CfnParameter(this, 'TaskSecurityGroups', {
      type: 'List<AWS::EC2::SecurityGroup::Id>',
      description: 'The security groups of Fargate tasks.',
    });
    const publicIp = new cdk.CfnParameter(this, 'TaskAssignPublicIp', { default: 'false', allowedValues: ['true', 'false'] });
    const orchestratorImage = new cdk.CfnParameter(this, 'OrchestratorImage', { description: 'The orchestrator image URI.' });
    const referenceImagePrefix = new cdk.CfnParameter(this, 'ReferenceImagePrefix', { default: 'sluice/' });
    const manifestRunnerImage = new cdk.CfnParameter(this, 'ManifestRunnerImage', { default: 'airbyte/source-declarative-manifest:7.39.1' });
    const enableUnsafeCode = new cdk.CfnParameter(this, 'EnableUnsafeCode', { default: 'false', allowedValues: ['true', 'false'] });
    const retentionDays = new cdk.CfnParameter(this, 'LogRetentionDays', {
      type: 'Number',
      default: '30',
      allowedValues: ['1', '3', '5', '7', '14', '30', '60', '90', '180', '365'],
    });
    const prefix = prefixParam.valueAsString;
    const region = cdk.Aws.REGION;
    const account = cdk.Aws.ACCOUNT_ID;
    const partition = cdk.Aws.PARTITION;

    // --- State: DynamoDB, by access path (ARCHITECTURE.md) ---
    const table = (name: string, what: string, indexes: [string, dynamodb.Attribute, dynamodb.Attribute?][], ttl?: string) => {
      const t = new dynamodb.Table(this, name, {
        tableName: `${prefix}-${what.replace('-table', '')}`,
        partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        timeToLiveAttribute: ttl,
        removalPolicy: cdk.RemovalPolicy.RETAIN,
      });
      for (const [indexName, partitionKey, sortKey] of indexes) {
        t.addGlobalSecondaryIndex({ indexName, partitionKey, sortKey, projectionType: dynamodb.ProjectionType.ALL });
      }
      purpose(t, what);
      return t;
    };
    const S = dynamodb.AttributeType.STRING;
    const N = dynamodb.AttributeType.NUMBER;
    const configTable = table('ConfigTable', 'config-table', [
      ['by-kind', { name: 'kind', type: S }, { name: 'seq', type: N }],
      ['by-workspace', { name: 'kindWs', type: S }, { name: 'seq', type: N }],
    ]);
    const jobsTable = table('JobsTable', 'jobs-table', [
      ['by-connection', { name: 'connectionId', type: S }, { name: 'id', type: N }],
      ['by-status', { name: 'status', type: S }, { name: 'id', type: N }],
      ['by-all', { name: 'entity', type: S }, { name: 'id', type: N }],
    ]);
    const workloadsTable = table(
      'WorkloadsTable',
      'workloads-table',
      [
        ['by-mutex', { name: 'activeMutex', type: S }],
        ['by-deadline', { name: 'active', type: S }, { name: 'deadline', type: N }],
      ],
      'expiresAt',
    );
    const tables = [configTable, jobsTable, workloadsTable];

    // --- The workload queue, its dead-letter queue and the alarm on it ---
    const deadLetters = new sqs.Queue(this, 'WorkloadDeadLetterQueue', {
      queueName: `${prefix}-workloads-dlq`,
      retentionPeriod: cdk.Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    purpose(deadLetters, 'workload-dead-letter-queue');
    const queue = new sqs.Queue(this, 'WorkloadQueue', {
      queueName: `${prefix}-workloads`,
      visibilityTimeout: cdk.Duration.seconds(180),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      deadLetterQueue: { queue: deadLetters, maxReceiveCount: 5 },
    });
    purpose(queue, 'workload-queue');
    const alarm = new cloudwatch.Alarm(this, 'WorkloadDeadLetterAlarm', {
      alarmName: `${prefix}-workloads-dead-letters`,
      alarmDescription: 'Workloads the launcher could not take in 5 deliveries; they wait in the dead-letter queue.',
      metric: deadLetters.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: cdk.Duration.minutes(5) }),
      threshold: 0,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    purpose(alarm, 'workload-dead-letter-alarm');

    // --- Events, schedules, secrets, logs ---
    const bus = new events.EventBus(this, 'EventBus', { eventBusName: `${prefix}-events` });
    purpose(bus, 'job-event-bus');
    const group = new scheduler.CfnScheduleGroup(this, 'ScheduleGroup', { name: prefix });
    purpose(group, 'connection-schedule-group');
    const schedulerFunctionArn = `arn:${partition}:lambda:${region}:${account}:function:${prefix}-scheduler`;
    const scheduleInvokeRole = new iam.Role(this, 'ScheduleInvokeRole', {
      description: "Assumed by EventBridge Scheduler to invoke the scheduler function for connections' schedules and retries.",
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': account } } }),
      inlinePolicies: {
        'invoke-scheduler': new iam.PolicyDocument({ statements: [new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [schedulerFunctionArn] })] }),
      },
    });
    purpose(scheduleInvokeRole, 'schedule-invoke-role');
    const launchKey = new secrets.Secret(this, 'LaunchKey', {
      secretName: `${prefix}/launch-key`,
      description: "The key a task's init step presents to fetch its files from the workload API, once.",
      generateSecretString: { passwordLength: 48, excludePunctuation: true },
    });
    purpose(launchKey, 'launch-key');
    const logGroup = (id: string, name: string, what: string) => {
      const g = new logs.CfnLogGroup(this, id, { logGroupName: name, retentionInDays: retentionDays.valueAsNumber });
      purpose(g, what);
      return g;
    };
    const attemptLogs = logGroup('AttemptLogGroup', `/${prefix}/attempts`, 'attempt-logs');
    const taskLogs = logGroup('TaskLogGroup', `/${prefix}/tasks`, 'task-logs');

    // --- ECS: the cluster and the tasks' roles ---
    const cluster = new ecs.CfnCluster(this, 'Cluster', { clusterName: prefix, capacityProviders: ['FARGATE', 'FARGATE_SPOT'] });
    purpose(cluster, 'task-cluster');
    const taskExecutionRole = new iam.Role(this, 'TaskExecutionRole', {
      description: "Lets ECS pull a task's images, write its logs and hand its init step the launch key.",
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonECSTaskExecutionRolePolicy')],
      inlinePolicies: {
        'launch-key': new iam.PolicyDocument({ statements: [new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [launchKey.secretArn] })] }),
      },
    });
    purpose(taskExecutionRole, 'task-execution-role');
    const taskRole = new iam.Role(this, 'TaskRole', {
      description: "The tasks' own role. It signs the tasks' calls to the workload routes (IAM auth at API Gateway) and grants nothing else; each call also carries its workload's credential.",
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': account } } }),
    });
    purpose(taskRole, 'task-role');
    // destination-s3 on ECS takes the task role's credentials: the data
    // lake's bucket, under its prefix, and nothing else.
    const dataLakeBucket = new cdk.CfnParameter(this, 'DataLakeBucket', {
      default: '',
      description: "A bucket destination-s3 writes to with the task role's credentials (empty for none).",
    });
    const dataLakePrefix = new cdk.CfnParameter(this, 'DataLakePrefix', { default: '', description: 'The key prefix in DataLakeBucket the tasks may use.' });
    const hasDataLake = new cdk.CfnCondition(this, 'HasDataLake', { expression: cdk.Fn.conditionNot(cdk.Fn.conditionEquals(dataLakeBucket.valueAsString, '')) });
    const dataLakeGrant = new iam.CfnPolicy(this, 'DataLakeGrant', {
      policyName: `${prefix}-data-lake`,
      roles: [taskRole.roleName],
      policyDocument: {
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'ListThePrefix',
            Effect: 'Allow',
            Action: 's3:ListBucket',
            Resource: `arn:${partition}:s3:::${dataLakeBucket.valueAsString}`,
            Condition: { StringLike: { 's3:prefix': `${dataLakePrefix.valueAsString}*` } },
          },
          {
            Sid: 'WriteObjects',
            Effect: 'Allow',
            Action: ['s3:PutObject', 's3:GetObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
            Resource: `arn:${partition}:s3:::${dataLakeBucket.valueAsString}/${dataLakePrefix.valueAsString}*`,
          },
        ],
      },
    });
    dataLakeGrant.cfnOptions.condition = hasDataLake;
    purpose(dataLakeGrant, 'data-lake-grant');

    // --- The functions ---
    const secretsArn = `arn:${partition}:secretsmanager:${region}:${account}:secret:${prefix}/*`;
    const schedulesArn = `arn:${partition}:scheduler:${region}:${account}:schedule/${prefix}/*`;
    const fn = (id: string, name: string, what: string, description: string, extra: { memory?: number; timeout?: number; env?: Record<string, string> } = {}) => {
      const logs = logGroup(`${id.replace('Function', '')}LogGroup`, `/aws/lambda/${prefix}-${name}`, `${name}-logs`);
      const f = new lambda.Function(this, id, {
        functionName: `${prefix}-${name}`,
        description,
        runtime: lambda.Runtime.PROVIDED_AL2023,
        handler: 'bootstrap',
        code: lambda.Code.fromAsset(path.join(lambdaDir, name)),
        memorySize: extra.memory ?? 256,
        timeout: cdk.Duration.seconds(extra.timeout ?? 30),
        environment: {
          SLUICE_PREFIX: prefix,
          SLUICE_QUEUE_URL: queue.queueUrl,
          SLUICE_SCHEDULER_FUNCTION_ARN: schedulerFunctionArn,
          SLUICE_SCHEDULER_ROLE_ARN: scheduleInvokeRole.roleArn,
          SLUICE_ENABLE_UNSAFE_CODE: enableUnsafeCode.valueAsString,
          AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH: 'true',
          ...extra.env,
        },
      });
      const cfn = f.node.defaultChild as lambda.CfnFunction;
      cfn.architectures = [architecture.valueAsString];
      cfn.loggingConfig = { logGroup: logs.ref };
      purpose(f, `${name}-function`);
      for (const t of tables) t.grantReadWriteData(f);
      queue.grantSendMessages(f);
      bus.grantPutEventsTo(f);
      return f;
    };
    const allow = (f: lambda.Function, sid: string, actions: string[], resources: string[], conditions?: Record<string, unknown>) =>
      f.addToRolePolicy(new iam.PolicyStatement({ sid, actions, resources, conditions }));

    const configApi = fn('ConfigApiFunction', 'config-api', 'config-api-function', "Airbyte's public API v1 (the Config API) behind API Gateway.", {
      memory: 512,
      env: { SLUICE_CONNECTOR_WAIT_SECS: '25' },
    });
    allow(configApi, 'Secrets', ['secretsmanager:CreateSecret', 'secretsmanager:GetSecretValue', 'secretsmanager:PutSecretValue', 'secretsmanager:DeleteSecret', 'secretsmanager:DescribeSecret'], [secretsArn]);
    allow(configApi, 'ConnectionSchedules', ['scheduler:CreateSchedule', 'scheduler:UpdateSchedule', 'scheduler:DeleteSchedule', 'scheduler:GetSchedule'], [schedulesArn]);
    allow(configApi, 'SchedulesInvokeTheScheduler', ['iam:PassRole'], [scheduleInvokeRole.roleArn]);
    allow(configApi, 'AttemptLogs', ['logs:GetLogEvents', 'logs:FilterLogEvents', 'logs:DescribeLogStreams'], [attemptLogs.attrArn]);

    const workloadApi = fn('WorkloadApiFunction', 'workload-api', 'workload-api-function', 'The workload API that tasks report to; each route opens one workload with its credential.');
    allow(workloadApi, 'SecretsAndTaskFiles', ['secretsmanager:CreateSecret', 'secretsmanager:GetSecretValue', 'secretsmanager:PutSecretValue', 'secretsmanager:DeleteSecret', 'secretsmanager:DescribeSecret'], [secretsArn]);
    allow(workloadApi, 'RetrySchedules', ['scheduler:CreateSchedule'], [schedulesArn]);
    allow(workloadApi, 'SchedulesInvokeTheScheduler', ['iam:PassRole'], [scheduleInvokeRole.roleArn]);
    allow(workloadApi, 'AttemptLogs', ['logs:CreateLogStream', 'logs:PutLogEvents'], [`${attemptLogs.attrArn}:*`]);

    const schedulerFn = fn('SchedulerFunction', 'scheduler', 'scheduler-function', "Invoked by EventBridge Scheduler; a connection's schedule starts a sync job, a retry's starts the attempts that are due.");
    allow(schedulerFn, 'SigningKey', ['secretsmanager:GetSecretValue', 'secretsmanager:CreateSecret'], [secretsArn]);
    allow(schedulerFn, 'SchedulesOfInactiveConnections', ['scheduler:DeleteSchedule'], [schedulesArn]);
    const permission = new lambda.CfnPermission(this, 'SchedulerInvokePermission', {
      functionName: schedulerFn.functionName,
      action: 'lambda:InvokeFunction',
      principal: 'scheduler.amazonaws.com',
      sourceAccount: account,
      sourceArn: schedulesArn,
    });
    purpose(permission, 'scheduler-invoke-permission');

    const api = new apigateway.RestApi(this, 'Api', {
      restApiName: `${prefix}-api`,
      endpointConfiguration: { types: [apigateway.EndpointType.REGIONAL] },
      deployOptions: { stageName: 'v1', throttlingBurstLimit: 200, throttlingRateLimit: 100 },
      // Compresses what the functions answer (the web app's files most of all).
      minCompressionSize: cdk.Size.bytes(1024),
      cloudWatchRole: false,
    });
    purpose(api, 'rest-api');
    // The ApiUrl output below says where the API is; CDK's own would be a second one.
    api.node.tryRemoveChild('Endpoint');
    const route = (pathParts: string[], f: lambda.Function, authorizationType = apigateway.AuthorizationType.NONE) => {
      let resource: apigateway.IResource = api.root;
      for (const part of pathParts) resource = resource.getResource(part) ?? resource.addResource(part);
      resource.addProxy({ defaultIntegration: new apigateway.LambdaIntegration(f), defaultMethodOptions: { authorizationType }, anyMethod: true });
    };
    route(['api', 'public', 'v1'], configApi);
    route(['v1'], configApi);
    // The web app: its page and its files, which call the API above.
    const app = new apigateway.LambdaIntegration(configApi);
    api.root.addMethod('GET', app);
    api.root.addResource('assets').addProxy({ defaultIntegration: app, anyMethod: false }).addMethod('GET', app);
    // Only calls signed by a principal allowed to invoke them (the task role) reach the workload routes.
    route(['api', 'internal', 'v1'], workloadApi, apigateway.AuthorizationType.IAM);
    taskRole.addToPolicy(new iam.PolicyStatement({ sid: 'WorkloadApi', actions: ['execute-api:Invoke'], resources: [api.arnForExecuteApi('*', '/api/internal/v1/*', '*')] }));
    const workloadApiUrl = `https://${api.restApiId}.execute-api.${region}.${cdk.Aws.URL_SUFFIX}/v1/api/internal/v1`;

    // A sync waits up to a minute for an earlier task of its connection to stop.
    const launcher = fn('LauncherFunction', 'launcher', 'launcher-function', 'Takes workloads off the queue, claims each once, and runs it as an ECS Fargate task.', {
      timeout: 120,
      env: {
        SLUICE_TASK_SUBNETS: cdk.Fn.join(',', subnets.valueAsList),
        SLUICE_TASK_SECURITY_GROUPS: cdk.Fn.join(',', securityGroups.valueAsList),
        SLUICE_TASK_PUBLIC_IP: publicIp.valueAsString,
        SLUICE_TASK_EXECUTION_ROLE_ARN: taskExecutionRole.roleArn,
        SLUICE_TASK_ROLE_ARN: taskRole.roleArn,
        SLUICE_ORCHESTRATOR_IMAGE: orchestratorImage.valueAsString,
        SLUICE_REFERENCE_IMAGE_PREFIX: referenceImagePrefix.valueAsString,
        SLUICE_MANIFEST_RUNNER_IMAGE: manifestRunnerImage.valueAsString,
        SLUICE_WORKLOAD_API_URL: workloadApiUrl,
        SLUICE_WORKLOAD_API_AUTH: 'aws-iam',
      },
    });
    launcher.addEventSource(new sources.SqsEventSource(queue, { batchSize: 10, reportBatchItemFailures: true }));
    allow(launcher, 'ConfigsAndTaskFiles', ['secretsmanager:CreateSecret', 'secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'], [secretsArn]);
    // RegisterTaskDefinition and DescribeTaskDefinition take no resource.
    allow(launcher, 'TaskDefinitions', ['ecs:RegisterTaskDefinition', 'ecs:DescribeTaskDefinition'], ['*']);
    allow(launcher, 'RunTasks', ['ecs:RunTask'], [`arn:${partition}:ecs:${region}:${account}:task-definition/${prefix}-*`], { ArnEquals: { 'ecs:cluster': cluster.attrArn } });
    allow(launcher, 'ListTasks', ['ecs:ListTasks'], ['*'], { ArnEquals: { 'ecs:cluster': cluster.attrArn } });
    allow(launcher, 'StopEarlierTasksOfTheConnection', ['ecs:DescribeTasks', 'ecs:StopTask'], [`arn:${partition}:ecs:${region}:${account}:task/${prefix}/*`]);
    allow(launcher, 'PassTaskRoles', ['iam:PassRole'], [taskExecutionRole.roleArn, taskRole.roleArn]);
    allow(launcher, 'RetrySchedules', ['scheduler:CreateSchedule'], [schedulesArn]);
    allow(launcher, 'SchedulesInvokeTheScheduler', ['iam:PassRole'], [scheduleInvokeRole.roleArn]);

    const monitor = fn('MonitorFunction', 'monitor', 'monitor-function', 'Every minute, fails workloads past their deadline, stops the tasks of ended workloads and starts due retries.', { timeout: 60 });
    const everyMinute = new events.Rule(this, 'MonitorEveryMinute', { ruleName: `${prefix}-monitor-every-minute`, schedule: events.Schedule.rate(cdk.Duration.minutes(1)) });
    everyMinute.addTarget(new targets.LambdaFunction(monitor));
    allow(monitor, 'SigningKey', ['secretsmanager:GetSecretValue', 'secretsmanager:CreateSecret'], [secretsArn]);
    // ListTasks is scoped by the cluster condition, not by a resource.
    allow(monitor, 'ListTasks', ['ecs:ListTasks'], ['*'], { ArnEquals: { 'ecs:cluster': cluster.attrArn } });
    allow(monitor, 'StopTasksOfEndedWorkloads', ['ecs:DescribeTasks', 'ecs:StopTask'], [`arn:${partition}:ecs:${region}:${account}:task/${prefix}/*`]);
    allow(monitor, 'RetrySchedules', ['scheduler:CreateSchedule'], [schedulesArn]);
    allow(monitor, 'SchedulesInvokeTheScheduler', ['iam:PassRole'], [scheduleInvokeRole.roleArn]);

    const apiBase = `https://${api.restApiId}.execute-api.${region}.${cdk.Aws.URL_SUFFIX}/v1`;
    new cdk.CfnOutput(this, 'ApiUrl', { value: `${apiBase}/api/public/v1`, description: 'The Config API (Airbyte\'s public API v1), for the CLI and Airbyte\'s SDKs.' });
    new cdk.CfnOutput(this, 'WorkloadApiUrl', { value: workloadApiUrl, description: 'The workload API, as tasks reach it.' });
    new cdk.CfnOutput(this, 'PlatformPrefix', { value: prefix, description: 'The prefix to give `sluice provision`.' });
    new cdk.CfnOutput(this, 'WorkloadQueueUrl', { value: queue.queueUrl });
    new cdk.CfnOutput(this, 'WorkloadDeadLetterQueueUrl', { value: deadLetters.queueUrl });
    new cdk.CfnOutput(this, 'EventBusName', { value: bus.eventBusName });
    new cdk.CfnOutput(this, 'ClusterName', { value: cluster.ref });
    new cdk.CfnOutput(this, 'TaskLogGroupName', { value: taskLogs.ref });
    new cdk.CfnOutput(this, 'AttemptLogGroupName', { value: attemptLogs.ref });
  }
}
