#!/usr/bin/env node
// The CDK app: `cdk deploy` (after task-images/build-lambdas.sh) deploys the
// same stack as `sam deploy`. `-c lambdaDir=DIR` points at the packaged
// functions (default ../target/functions).
import * as cdk from 'aws-cdk-lib';
import { SluiceStack } from '../lib/sluice-stack';

const app = new cdk.App();
new SluiceStack(app, app.node.tryGetContext('stackName') ?? 'sluice', {
  lambdaDir: app.node.tryGetContext('lambdaDir'),
  description: "Sluice: Airbyte's data-movement platform as Lambda functions and ECS Fargate tasks (the CDK twin of template.yaml).",
});
