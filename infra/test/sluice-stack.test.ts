// Assertions on the key properties of each resource, on the synthesized template.
import { test } from 'node:test';
import * as assert from 'node:assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as cdk from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { SluiceStack } from '../lib/sluice-stack';

const FUNCTIONS = ['config-api', 'workload-api', 'scheduler', 'launcher', 'monitor'];

function synth(): Template {
  // Stand-in packages: the assertions look at the stack, not the binaries.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-lambda-'));
  for (const f of FUNCTIONS) {
    fs.mkdirSync(path.join(dir, f));
    fs.writeFileSync(path.join(dir, f, 'bootstrap'), '#!/bin/sh\n');
  }
  const app = new cdk.App();
  return Template.fromStack(new SluiceStack(app, 'test', { lambdaDir: dir }));
}

const template = synth();

test('the tables have the keys, indexes, TTL and recovery the store uses', () => {
  template.resourceCountIs('AWS::DynamoDB::Table', 3);
  template.hasResourceProperties('AWS::DynamoDB::Table', {
    TableName: { 'Fn::Join': ['', [{ Ref: 'Prefix' }, '-workloads']] },
    KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
    BillingMode: 'PAY_PER_REQUEST',
    PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
    GlobalSecondaryIndexes: Match.arrayWith([Match.objectLike({ IndexName: 'by-mutex' }), Match.objectLike({ IndexName: 'by-deadline' })]),
  });
  template.hasResourceProperties('AWS::DynamoDB::Table', {
    GlobalSecondaryIndexes: Match.arrayWith([Match.objectLike({ IndexName: 'by-connection' }), Match.objectLike({ IndexName: 'by-status' }), Match.objectLike({ IndexName: 'by-all' })]),
  });
});

test('the workload queue redrives to its dead-letter queue after 5 receives, which an alarm watches', () => {
  template.hasResourceProperties('AWS::SQS::Queue', {
    VisibilityTimeout: 180,
    RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
  });
  template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'ApproximateNumberOfMessagesVisible', Threshold: 0, ComparisonOperator: 'GreaterThanThreshold' });
});

test('every function runs bootstrap on provided.al2023, on the architecture parameter', () => {
  const functions = template.findResources('AWS::Lambda::Function', { Properties: { Runtime: 'provided.al2023' } });
  assert.strictEqual(Object.keys(functions).length, FUNCTIONS.length);
  for (const f of Object.values(functions)) {
    assert.strictEqual(f.Properties.Handler, 'bootstrap');
    assert.deepStrictEqual(f.Properties.Architectures, [{ Ref: 'Architecture' }]);
    assert.ok(f.Properties.Environment.Variables.SLUICE_PREFIX, 'SLUICE_PREFIX');
  }
});

test('the launcher takes SQS batches with partial batch failures, and the monitor runs every minute', () => {
  template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { BatchSize: 10, FunctionResponseTypes: ['ReportBatchItemFailures'] });
  template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(1 minute)' });
});

test('the API proxies the public and internal routes to their functions, and serves the web app', () => {
  template.hasResourceProperties('AWS::ApiGateway::RestApi', { EndpointConfiguration: { Types: ['REGIONAL'] }, MinimumCompressionSize: 1024 });
  template.resourcePropertiesCountIs('AWS::ApiGateway::Resource', { PathPart: '{proxy+}' }, 4);
  const gets = Object.values(template.findResources('AWS::ApiGateway::Method')).filter((m: any) => m.Properties.HttpMethod === 'GET');
  assert.strictEqual(gets.length, 2, 'GET / and GET /assets/{proxy+}');
  template.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: 'v1' });
});

test('the workload routes take SigV4-signed calls (IAM auth), and the task role may make them', () => {
  const resources = template.findResources('AWS::ApiGateway::Resource');
  const internalProxy = Object.entries(resources).filter(([, r]) => r.Properties.PathPart === '{proxy+}' && JSON.stringify(r.Properties.ParentId).includes('internal'));
  assert.strictEqual(internalProxy.length, 1);
  const methods = Object.values(template.findResources('AWS::ApiGateway::Method')).filter((m: any) => m.Properties.HttpMethod === 'ANY');
  assert.strictEqual(methods.filter((m: any) => m.Properties.ResourceId.Ref === internalProxy[0][0]).length, 1);
  for (const m of methods as any[]) {
    const internal = m.Properties.ResourceId.Ref === internalProxy[0][0];
    assert.strictEqual(m.Properties.AuthorizationType, internal ? 'AWS_IAM' : 'NONE', JSON.stringify(m.Properties.ResourceId));
    assert.strictEqual(m.Properties.Integration.Credentials, undefined, 'API Gateway invokes the function as itself, not with the caller\'s credentials');
  }
  template.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: { Statement: [Match.objectLike({ Sid: 'WorkloadApi', Action: 'execute-api:Invoke' })] },
    Roles: [{ Ref: Match.stringLikeRegexp('TaskRole') }],
  });
  template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ SLUICE_WORKLOAD_API_AUTH: 'aws-iam' }) } });
});

test('no IAM statement grants every resource except the ECS calls that take none', () => {
  const policies = template.findResources('AWS::IAM::Policy');
  for (const [name, policy] of Object.entries(policies)) {
    for (const statement of policy.Properties.PolicyDocument.Statement) {
      if (statement.Resource === '*') {
        const actions = [statement.Action].flat();
        const allowed = actions.every((a: string) => ['ecs:RegisterTaskDefinition', 'ecs:DescribeTaskDefinition', 'ecs:ListTasks'].includes(a));
        assert.ok(allowed, `${name} grants ${actions} on *`);
      }
    }
  }
});

test('the task execution role may read the launch key and nothing else secret', () => {
  template.hasResourceProperties('AWS::IAM::Role', {
    AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Service: 'ecs-tasks.amazonaws.com' } })] },
    Policies: [{ PolicyName: 'launch-key', PolicyDocument: { Statement: [Match.objectLike({ Action: 'secretsmanager:GetSecretValue', Resource: { Ref: Match.anyValue() } })] } }],
  });
});

test('log groups keep logs for the retention parameter', () => {
  const groups = template.findResources('AWS::Logs::LogGroup');
  assert.strictEqual(Object.keys(groups).length, 2 + FUNCTIONS.length);
  for (const g of Object.values(groups)) assert.deepStrictEqual(g.Properties.RetentionInDays, { Ref: 'LogRetentionDays' });
});
