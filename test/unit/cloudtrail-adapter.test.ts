import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cloudtrailAdapter, parseAwsTime, stripApiVersion } from '../../services/collector/adapters/cloudtrail.ts';
import { BodyError } from '../../shared/errors.ts';
import type { CanonicalEvent } from '../../shared/event.ts';

// The Stratus Red Team detonation logs live beside the project (../shared/datasets), present in CI.
const DATASET_DIR = fileURLToPath(new URL('../../../shared/datasets/cloudtrail-stratus/', import.meta.url));
const hasDataset = existsSync(DATASET_DIR);
const datasetFiles = hasDataset ? readdirSync(DATASET_DIR).filter((f) => f.endsWith('.json')).sort() : [];

function loadRecords(file: string): unknown[] {
  const doc: unknown = JSON.parse(readFileSync(DATASET_DIR + file, 'utf8'));
  if (!Array.isArray(doc)) throw new Error(`${file}: expected a JSON array`);
  return doc;
}

function parse(body: string | Buffer) {
  return cloudtrailAdapter.parse(typeof body === 'string' ? Buffer.from(body) : body, 'application/json');
}

/** Every string value stored under `key` (any depth) in a JSON value. */
function valuesUnder(v: unknown, key: string, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) valuesUnder(x, key, out);
  else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      if (k === key && typeof x === 'string') out.push(x);
      else valuesUnder(x, key, out);
    }
  }
  return out;
}

const ISSUER_KEY = 'AKIAIOSFODNN7EXAMPLE';
const SESSION_TOKEN = 'FwoGZXIvYXdzEXAMPLE-session-token-must-never-be-stored';
const SECRET_KEY = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

/** A successful AssumeRole with session tags, in CloudTrail's own shape. */
function assumeRole(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    eventVersion: '1.08',
    userIdentity: {
      type: 'IAMUser',
      principalId: 'AIDAEXAMPLEUSER',
      arn: 'arn:aws:iam::111122223333:user/agent-runner',
      accountId: '111122223333',
      accessKeyId: ISSUER_KEY,
      userName: 'agent-runner',
    },
    eventTime: '2024-08-01T11:30:22Z',
    eventSource: 'sts.amazonaws.com',
    eventName: 'AssumeRole',
    awsRegion: 'us-east-1',
    sourceIPAddress: '203.0.113.10',
    userAgent: 'aws-sdk-js/3.600.0',
    requestParameters: {
      roleArn: 'arn:aws:iam::111122223333:role/agent-task-role',
      roleSessionName: 'task-42',
      durationSeconds: 900,
      tags: [
        { key: 'runtrail.task.id', value: 'task-42' },
        { key: 'team', value: 'payments' },
      ],
      transitiveTagKeys: ['runtrail.task.id'],
    },
    responseElements: {
      credentials: {
        accessKeyId: 'ASIAEXAMPLETASK42AAA',
        sessionToken: SESSION_TOKEN,
        expiration: 'Aug 1, 2024, 11:45:22 AM',
      },
      assumedRoleUser: {
        assumedRoleId: 'AROAEXAMPLEROLE:task-42',
        arn: 'arn:aws:sts::111122223333:assumed-role/agent-task-role/task-42',
      },
    },
    requestID: 'req-assume-1',
    eventID: 'evt-assume-1',
    readOnly: true,
    resources: [{ accountId: '111122223333', type: 'AWS::IAM::Role', ARN: 'arn:aws:iam::111122223333:role/agent-task-role' }],
    eventType: 'AwsApiCall',
    managementEvent: true,
    recipientAccountId: '111122223333',
    eventCategory: 'Management',
    tlsDetails: { tlsVersion: 'TLSv1.3', cipherSuite: 'TLS_AES_128_GCM_SHA256', clientProvidedHostHeader: 'sts.us-east-1.amazonaws.com' },
    ...overrides,
  };
}

/** A call made with the session issued above. */
function getSecretValue(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    eventVersion: '1.09',
    userIdentity: {
      type: 'AssumedRole',
      principalId: 'AROAEXAMPLEROLE:task-42',
      arn: 'arn:aws:sts::111122223333:assumed-role/agent-task-role/task-42',
      accountId: '111122223333',
      accessKeyId: 'ASIAEXAMPLETASK42AAA',
      sessionContext: {
        sessionIssuer: { type: 'Role', arn: 'arn:aws:iam::111122223333:role/agent-task-role', userName: 'agent-task-role' },
        attributes: { creationDate: '2024-08-01T11:30:22Z', mfaAuthenticated: 'false' },
      },
    },
    eventTime: '2024-08-01T11:31:05Z',
    eventSource: 'secretsmanager.amazonaws.com',
    eventName: 'GetSecretValue',
    awsRegion: 'us-east-1',
    sourceIPAddress: '203.0.113.10',
    userAgent: 'aws-sdk-js/3.600.0',
    requestParameters: { secretId: 'prod/payments/stripe' },
    responseElements: null,
    requestID: 'req-secret-1',
    eventID: 'evt-secret-1',
    readOnly: true,
    eventType: 'AwsApiCall',
    managementEvent: true,
    recipientAccountId: '111122223333',
    eventCategory: 'Management',
    ...overrides,
  };
}

describe('cloudtrail adapter: Stratus Red Team dataset', () => {
  it.runIf(hasDataset)('converts every record of every file without a rejection', () => {
    expect(datasetFiles.length).toBeGreaterThan(0);
    for (const file of datasetFiles) {
      const res = parse(readFileSync(DATASET_DIR + file));
      expect(res.rejected, file).toEqual([]);
      expect(res.events.length, file).toBe(loadRecords(file).length);
      expect(res.records, file).toBe(res.events.length);
      for (const e of res.events) {
        expect(e.format).toBe('cloudtrail');
        expect(e.source).toBe('resource');
        expect(e.action, file).toMatch(/^[a-z0-9-]+:[A-Za-z]+$/);
      }
    }
  });

  it.runIf(hasDataset)('turns every successful AssumeRole into credential.issued with key, session, parent and expiry', () => {
    let issued = 0;
    for (const file of datasetFiles) {
      const records = loadRecords(file);
      const byEventId = new Map<string, Record<string, unknown>>();
      for (const r of records) byEventId.set(String((r as Record<string, unknown>)['eventID']), r as Record<string, unknown>);
      for (const e of parse(readFileSync(DATASET_DIR + file)).events) {
        if (e.action !== 'sts:AssumeRole') continue;
        const raw = byEventId.get(String(e.attributes['eventID']));
        expect(raw).toBeDefined();
        if (raw?.['errorCode'] !== undefined) {
          expect(e.type).toBe('resource.access');
          expect(e.outcome).toBe('failure');
          expect(e.credential).toBeUndefined();
          continue;
        }
        issued++;
        const creds = (raw?.['responseElements'] as Record<string, Record<string, unknown>>)['credentials'];
        const params = raw?.['requestParameters'] as Record<string, unknown>;
        const caller = (raw?.['userIdentity'] as Record<string, unknown>)['accessKeyId'];
        expect(e.type).toBe('credential.issued');
        expect(e.credential?.kind).toBe('aws-access-key');
        expect(e.credential?.id).toBe(creds?.['accessKeyId']);
        expect(e.credential?.id).toMatch(/^ASIA/);
        expect(e.credential?.session_name).toBe(params['roleSessionName']);
        expect(e.credential?.parent_id).toBe(caller);
        expect(e.credential_id).toBe(caller);
        expect(e.credential?.subject).toMatch(/^arn:aws:sts::\d+:assumed-role\//);
        // durationSeconds 900 in every detonation: expiry is exactly 15 minutes after the call.
        expect(e.credential?.expires_at).toBe(e.time + Number(params['durationSeconds']) * 1000);
      }
    }
    expect(issued).toBeGreaterThanOrEqual(4);
  });

  it.runIf(hasDataset)('gives a later call made with an issued ASIA key that key as credential_id', () => {
    const filesWithPairs = new Set<string>();
    for (const file of datasetFiles) {
      const events = parse(readFileSync(DATASET_DIR + file)).events;
      for (const issue of events.filter((e) => e.type === 'credential.issued')) {
        const uses = events.filter((e) => e.credential_id === issue.credential?.id && e.time >= issue.time);
        if (uses.length > 0) filesWithPairs.add(file);
        for (const u of uses) {
          expect(u.type).toBe('resource.access');
          expect(u.principal).toBe(issue.credential?.subject);
          expect(u.time).toBeLessThanOrEqual(issue.credential?.expires_at ?? 0);
        }
      }
    }
    expect([...filesWithPairs]).toEqual(
      expect.arrayContaining(['aws.credential-access.ec2-get-password-data.json', 'aws.execution.ec2-launch-unusual-instances.json']),
    );

    const launch = parse(readFileSync(DATASET_DIR + 'aws.execution.ec2-launch-unusual-instances.json')).events;
    const run = launch.find((e) => e.action === 'ec2:RunInstances');
    const issuer = launch.find((e) => e.credential?.id === run?.credential_id);
    expect(run?.credential_id).toMatch(/^ASIA/);
    expect(issuer?.type).toBe('credential.issued');
    expect(issuer?.credential?.session_name).toBe('aws-go-sdk-1722511821294449000');
  });

  it.runIf(hasDataset)('gives identical events for the Records wrapper, a bare array and NDJSON', () => {
    for (const file of datasetFiles) {
      const records = loadRecords(file);
      const asArray = parse(JSON.stringify(records));
      const asWrapper = parse(JSON.stringify({ Records: records }));
      const asNdjson = cloudtrailAdapter.parse(Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n'), 'application/x-ndjson');
      expect(asArray.rejected, file).toEqual([]);
      expect(asWrapper).toEqual(asArray);
      expect(asNdjson).toEqual(asArray);
    }
  });

  it.runIf(hasDataset)('keeps no session token or secret key anywhere in the output', () => {
    let tokens = 0;
    for (const file of datasetFiles) {
      const records = loadRecords(file);
      const secrets = [...valuesUnder(records, 'sessionToken'), ...valuesUnder(records, 'secretAccessKey')];
      tokens += secrets.length;
      const out = JSON.stringify(parse(JSON.stringify(records)));
      for (const s of secrets) expect(out.includes(s), `${file} leaks ${s.slice(0, 12)}...`).toBe(false);
    }
    expect(tokens).toBeGreaterThan(0);
  });

  it.runIf(hasDataset)('marks secret-reading calls secret/restricted and leaves ordinary calls alone', () => {
    const all = datasetFiles.flatMap((f) => parse(readFileSync(DATASET_DIR + f)).events);
    const secretActions = new Set(all.filter((e) => e.data_classes.includes('secret')).map((e) => e.action));
    expect([...secretActions].sort()).toEqual(
      ['ec2:GetPasswordData', 'iam:CreateAccessKey', 'secretsmanager:BatchGetSecretValue', 'ssm:GetParameters'].sort(),
    );
    for (const e of all) expect(e.sensitivity).toBe(e.data_classes.includes('secret') ? 'restricted' : 'unknown');
  });
});

describe('cloudtrail adapter: inline fixtures', () => {
  it('binds an issued session to the call made with it', () => {
    const res = parse(JSON.stringify({ Records: [assumeRole(), getSecretValue()] }));
    expect(res.rejected).toEqual([]);
    const [issue, use] = res.events as [CanonicalEvent, CanonicalEvent];
    expect(issue.type).toBe('credential.issued');
    expect(issue.credential).toEqual({
      id: 'ASIAEXAMPLETASK42AAA',
      kind: 'aws-access-key',
      parent_id: ISSUER_KEY,
      subject: 'arn:aws:sts::111122223333:assumed-role/agent-task-role/task-42',
      session_name: 'task-42',
      tags: { 'runtrail.task.id': 'task-42', team: 'payments' },
      expires_at: Date.UTC(2024, 7, 1, 11, 45, 22),
    });
    expect(issue.credential_id).toBe(ISSUER_KEY);
    expect(issue.principal).toBe('arn:aws:iam::111122223333:user/agent-runner');
    expect(issue.request_id).toBe('req-assume-1');
    expect(issue.host).toBe('sts.us-east-1.amazonaws.com');
    expect(issue.resources).toEqual([
      { type: 'AWS::IAM::Role', id: 'arn:aws:iam::111122223333:role/agent-task-role', account: '111122223333' },
    ]);
    // The adapter does not pick a task from tags: that is the correlator's (configurable) job.
    expect(issue.task_id).toBeUndefined();

    expect(use.type).toBe('resource.access');
    expect(use.credential_id).toBe(issue.credential?.id);
    expect(use.action).toBe('secretsmanager:GetSecretValue');
    expect(use.data_classes).toEqual(['secret']);
    expect(use.sensitivity).toBe('restricted');
    expect(use.resources).toEqual([{ type: 'AWS::SecretsManager::Secret', id: 'prod/payments/stripe', account: '111122223333' }]);
    expect(use.attributes['userIdentity.sessionContext.sessionIssuer.arn']).toBe('arn:aws:iam::111122223333:role/agent-task-role');
    expect(use.attributes['userIdentity.type']).toBe('AssumedRole');
    expect(use.attributes['readOnly']).toBe(true);
  });

  it('accepts session tags as [{Key, Value}] and takes GetFederationToken name and federated user', () => {
    const rec = assumeRole({
      eventName: 'GetFederationToken',
      eventID: 'evt-fed-1',
      requestParameters: { name: 'task-77', durationSeconds: 3600, tags: [{ Key: 'task_id', Value: 'task-77' }] },
      responseElements: {
        credentials: { accessKeyId: 'ASIAEXAMPLEFEDERATED', sessionToken: SESSION_TOKEN, expiration: '2024-08-01T12:30:22Z' },
        federatedUser: { federatedUserId: '111122223333:task-77', arn: 'arn:aws:sts::111122223333:federated-user/task-77' },
      },
      resources: undefined,
    });
    const [e] = parse(JSON.stringify([rec])).events;
    expect(e?.type).toBe('credential.issued');
    expect(e?.credential).toMatchObject({
      id: 'ASIAEXAMPLEFEDERATED',
      parent_id: ISSUER_KEY,
      subject: 'arn:aws:sts::111122223333:federated-user/task-77',
      session_name: 'task-77',
      tags: { task_id: 'task-77' },
      expires_at: Date.UTC(2024, 7, 1, 12, 30, 22),
    });
    // GetFederationToken mints credentials from a long-term key: a secret-bearing call.
    expect(e?.data_classes).toEqual(['secret']);
  });

  it('handles GetSessionToken: the session acts as the caller, and a logged secret key is redacted', () => {
    const rec = assumeRole({
      eventName: 'GetSessionToken',
      eventID: 'evt-gst-1',
      requestParameters: { durationSeconds: 3600 },
      responseElements: {
        credentials: { accessKeyId: 'ASIAEXAMPLESESSION01', sessionToken: SESSION_TOKEN, secretAccessKey: SECRET_KEY, expiration: 'Aug 1, 2024 12:30:22 PM' },
      },
      resources: undefined,
    });
    const res = parse(JSON.stringify([rec]));
    const e = res.events[0];
    expect(e?.credential).toMatchObject({
      id: 'ASIAEXAMPLESESSION01',
      parent_id: ISSUER_KEY,
      subject: 'arn:aws:iam::111122223333:user/agent-runner',
      expires_at: Date.UTC(2024, 7, 1, 12, 30, 22),
    });
    expect(e?.credential?.session_name).toBeUndefined();
    const out = JSON.stringify(res);
    expect(out).not.toContain(SESSION_TOKEN);
    expect(out).not.toContain(SECRET_KEY);
    const creds = (e?.attributes['responseElements'] as Record<string, Record<string, unknown>>)['credentials'];
    expect(creds).toEqual({ accessKeyId: 'ASIAEXAMPLESESSION01', sessionToken: '[redacted]', secretAccessKey: '[redacted]', expiration: 'Aug 1, 2024 12:30:22 PM' });
  });

  it('takes the JWT subject of AssumeRoleWithWebIdentity as principal and workload (EKS service account)', () => {
    const sub = 'system:serviceaccount:agents:research-agent';
    const rec = assumeRole({
      eventName: 'AssumeRoleWithWebIdentity',
      eventID: 'evt-web-1',
      userIdentity: {
        type: 'WebIdentityUser',
        principalId: `arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE:sts.amazonaws.com:${sub}`,
        userName: sub,
        identityProvider: 'arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE',
      },
      requestParameters: { roleArn: 'arn:aws:iam::111122223333:role/research-agent', roleSessionName: 'botocore-session-1722511821', durationSeconds: 3600 },
      responseElements: {
        credentials: { accessKeyId: 'ASIAEXAMPLEWEBIDENT1', sessionToken: SESSION_TOKEN, expiration: 'Aug 1, 2024, 12:30:22 PM' },
        subjectFromWebIdentityToken: sub,
        assumedRoleUser: { assumedRoleId: 'AROAEXAMPLE:botocore-session-1722511821', arn: 'arn:aws:sts::111122223333:assumed-role/research-agent/botocore-session-1722511821' },
        provider: 'arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE',
        audience: 'sts.amazonaws.com',
      },
      additionalEventData: { identityProviderConnectionVerificationMethod: 'IAMTrustStore' },
      resources: undefined,
    });
    const [e] = parse(JSON.stringify([rec])).events;
    expect(e?.type).toBe('credential.issued');
    expect(e?.principal).toBe(sub);
    expect(e?.workload_id).toBe(sub);
    expect(e?.credential_id).toBeUndefined();
    expect(e?.credential?.parent_id).toBeUndefined();
    expect(e?.credential?.session_name).toBe('botocore-session-1722511821');
    expect(e?.attributes['web_identity.audience']).toBe('sts.amazonaws.com');
    expect(e?.attributes['web_identity.provider']).toMatch(/oidc-provider\/oidc\.eks/);
    expect(e?.attributes['additionalEventData']).toEqual({ identityProviderConnectionVerificationMethod: 'IAMTrustStore' });
    expect(e?.resources[0]?.id).toBe('arn:aws:iam::111122223333:role/research-agent');
  });

  it('takes a SPIFFE ID web-identity subject as the workload id; other subjects are not workloads', () => {
    const web = (sub: string, id: string) =>
      assumeRole({
        eventName: 'AssumeRoleWithWebIdentity',
        eventID: id,
        userIdentity: { type: 'WebIdentityUser', principalId: `spire.example.org:${sub}`, userName: sub, identityProvider: 'spire.example.org' },
        responseElements: { credentials: { accessKeyId: 'ASIAEXAMPLESPIFFE001', expiration: 'Aug 1, 2024, 12:30:22 PM' }, subjectFromWebIdentityToken: sub },
      });
    const events = parse(JSON.stringify([web('spiffe://example.org/ns/agents/sa/planner', 'a'), web('user-1234', 'b')])).events;
    expect(events[0]?.workload_id).toBe('spiffe://example.org/ns/agents/sa/planner');
    expect(events[0]?.principal).toBe('spiffe://example.org/ns/agents/sa/planner');
    expect(events[1]?.workload_id).toBeUndefined();
    expect(events[1]?.principal).toBe('user-1234');
  });

  it('falls back to durationSeconds when the expiration is missing', () => {
    const rec = assumeRole({
      responseElements: { credentials: { accessKeyId: 'ASIAEXAMPLENOEXPIRY1' }, assumedRoleUser: { arn: 'arn:aws:sts::111122223333:assumed-role/r/s' } },
    });
    const [e] = parse(JSON.stringify([rec])).events;
    expect(e?.credential?.expires_at).toBe(Date.UTC(2024, 7, 1, 11, 30, 22) + 900_000);
  });

  it('keeps an AssumeRole without issued credentials (denied, or responseElements omitted) as resource.access', () => {
    const denied = assumeRole({ errorCode: 'AccessDenied', errorMessage: 'not authorized', responseElements: null, eventID: 'd' });
    const omitted = assumeRole({ responseElements: null, eventID: 'o' });
    const [d, o] = parse(JSON.stringify([denied, omitted])).events;
    expect(d?.type).toBe('resource.access');
    expect(d?.outcome).toBe('failure');
    expect(d?.attributes['errorCode']).toBe('AccessDenied');
    expect(o?.type).toBe('resource.access');
    expect(o?.outcome).toBe('success');
  });

  it('marks SSM parameter reads secret only when decrypting', () => {
    const read = (withDecryption: boolean, id: string) =>
      getSecretValue({ eventSource: 'ssm.amazonaws.com', eventName: 'GetParameter', eventID: id, requestParameters: { name: '/prod/db/password', withDecryption } });
    const [dec, plain] = parse(JSON.stringify([read(true, 'x'), read(false, 'y')])).events;
    expect(dec?.data_classes).toEqual(['secret']);
    expect(dec?.sensitivity).toBe('restricted');
    expect(dec?.resources).toEqual([{ type: 'AWS::SSM::Parameter', id: '/prod/db/password', account: '111122223333' }]);
    expect(plain?.data_classes).toEqual([]);
    expect(plain?.sensitivity).toBe('unknown');
  });

  it('derives S3 bucket and object resources, ARN-named parameters and instancesSet ids', () => {
    const s3 = getSecretValue({
      eventSource: 's3.amazonaws.com',
      eventName: 'GetObject',
      eventID: 's3',
      eventCategory: 'Data',
      requestParameters: { bucketName: 'agent-artifacts', key: 'reports/q3.pdf', Host: 'agent-artifacts.s3.amazonaws.com' },
      resources: [
        { type: 'AWS::S3::Object', ARN: 'arn:aws:s3:::agent-artifacts/reports/q3.pdf' },
        { accountId: '111122223333', type: 'AWS::S3::Bucket', ARN: 'arn:aws:s3:::agent-artifacts' },
      ],
    });
    const iam = getSecretValue({
      eventSource: 'iam.amazonaws.com',
      eventName: 'AttachRolePolicy',
      eventID: 'iam',
      requestParameters: { roleName: 'agent-task-role', policyArn: 'arn:aws:iam::aws:policy/AdministratorAccess' },
    });
    const ec2 = getSecretValue({
      eventSource: 'ec2.amazonaws.com',
      eventName: 'TerminateInstances',
      eventID: 'ec2',
      requestParameters: { instancesSet: { items: [{ instanceId: 'i-0abc' }, { instanceId: 'i-0def' }] } },
    });
    const [a, b, c] = parse(JSON.stringify([s3, iam, ec2])).events;
    // Parameter-derived S3 ids coincide with CloudTrail's own resources and are not repeated.
    expect(a?.resources).toEqual([
      { type: 'AWS::S3::Object', id: 'arn:aws:s3:::agent-artifacts/reports/q3.pdf', account: '111122223333' },
      { type: 'AWS::S3::Bucket', id: 'arn:aws:s3:::agent-artifacts', account: '111122223333' },
    ]);
    expect(b?.resources).toEqual([
      { id: 'arn:aws:iam::aws:policy/AdministratorAccess', account: 'aws' },
      { type: 'AWS::IAM::Role', id: 'agent-task-role', account: '111122223333' },
    ]);
    expect(c?.resources.map((r) => r.id)).toEqual(['i-0abc', 'i-0def']);
  });

  it('records the key created by iam:CreateAccessKey as a resource and marks the call secret', () => {
    const rec = getSecretValue({
      eventSource: 'iam.amazonaws.com',
      eventName: 'CreateAccessKey',
      eventID: 'cak',
      requestParameters: { userName: 'backdoor' },
      responseElements: { accessKey: { accessKeyId: 'AKIAEXAMPLEBACKDOOR1', status: 'Active', userName: 'backdoor', createDate: 'Aug 1, 2024 1:33:28 PM' } },
    });
    const [e] = parse(JSON.stringify([rec])).events;
    expect(e?.type).toBe('resource.access');
    expect(e?.resources).toEqual([
      { type: 'AWS::IAM::AccessKey', id: 'AKIAEXAMPLEBACKDOOR1', account: '111122223333' },
      { type: 'AWS::IAM::User', id: 'backdoor', account: '111122223333' },
    ]);
    expect(e?.data_classes).toEqual(['secret']);
  });

  it('keeps service names out of src_ip, strips API versions from actions, and falls back for principals', () => {
    const rec = getSecretValue({
      userIdentity: { type: 'AWSService', invokedBy: 'lambda.amazonaws.com' },
      sourceIPAddress: 'lambda.amazonaws.com',
      eventSource: 'lambda.amazonaws.com',
      eventName: 'UpdateFunctionConfiguration20150331v2',
      eventID: 'lam',
      requestParameters: { functionName: 'arn:aws:lambda:us-east-1:111122223333:function:f' },
    });
    const [e] = parse(JSON.stringify([rec])).events;
    expect(e?.src_ip).toBeUndefined();
    expect(e?.attributes['sourceIPAddress']).toBe('lambda.amazonaws.com');
    expect(e?.action).toBe('lambda:UpdateFunctionConfiguration');
    expect(e?.attributes['eventName']).toBe('UpdateFunctionConfiguration20150331v2');
    expect(e?.principal).toBe('lambda.amazonaws.com');
    expect(e?.credential_id).toBeUndefined();
    expect(e?.resources).toEqual([{ type: 'AWS::Lambda::Function', id: 'arn:aws:lambda:us-east-1:111122223333:function:f', account: '111122223333' }]);
  });

  it('derives a deterministic event id from eventID, so a replay maps to the same id', () => {
    const a = parse(JSON.stringify([assumeRole()])).events[0];
    const b = parse(JSON.stringify({ Records: [assumeRole()] })).events[0];
    const c = parse(JSON.stringify([assumeRole({ eventID: 'other' })])).events[0];
    expect(a?.event_id).toMatch(/^[0-9a-f]{32}$/);
    expect(a?.event_id).toBe(b?.event_id);
    expect(a?.event_id).not.toBe(c?.event_id);
  });
});

describe('cloudtrail adapter: malformed input', () => {
  it('rejects a record without eventTime by index and field, keeping the others', () => {
    const bad = getSecretValue({ eventTime: undefined, eventID: 'no-time' });
    const res = parse(JSON.stringify({ Records: [assumeRole(), bad, getSecretValue()] }));
    expect(res.records).toBe(3);
    expect(res.events.map((e) => e.request_id)).toEqual(['req-assume-1', 'req-secret-1']);
    expect(res.rejected).toEqual([{ index: 1, field: 'eventTime', reason: 'missing' }]);
  });

  it('rejects a record without eventID, and one with an unparseable eventTime', () => {
    const res = parse(JSON.stringify([getSecretValue({ eventID: undefined }), getSecretValue({ eventTime: 'yesterday' })]));
    expect(res.events).toEqual([]);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
      [0, 'eventID'],
      [1, 'eventTime'],
    ]);
  });

  it('rejects a record whose userIdentity is not an object', () => {
    const res = parse(JSON.stringify([getSecretValue({ userIdentity: 'arn:aws:iam::111122223333:user/x' }), getSecretValue()]));
    expect(res.events).toHaveLength(1);
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]).toMatchObject({ index: 0, field: 'userIdentity' });
    expect(res.rejected[0]?.reason).toContain('expected an object, got string');
  });

  it('rejects a non-object record and a record whose resources is not an array', () => {
    const res = parse(JSON.stringify([42, getSecretValue({ resources: { ARN: 'x' } }), getSecretValue()]));
    expect(res.events).toHaveLength(1);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
      [0, ''],
      [1, 'resources'],
    ]);
  });

  it('rejects a truncated NDJSON line and keeps the lines around it', () => {
    const lines = [JSON.stringify(assumeRole()), JSON.stringify(getSecretValue()).slice(0, 120), JSON.stringify(getSecretValue({ eventID: 'evt-3', requestID: 'req-3' }))];
    const res = cloudtrailAdapter.parse(Buffer.from(lines.join('\n')), 'application/x-ndjson');
    expect(res.records).toBe(3);
    expect(res.events.map((e) => e.request_id)).toEqual(['req-assume-1', 'req-3']);
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]).toMatchObject({ index: 1, field: '' });
    expect(res.rejected[0]?.reason).toMatch(/^line 2: not valid JSON/);
  });

  it('throws BodyError for a body that is not JSON at all', () => {
    expect(() => parse('this is not cloudtrail\nnor json')).toThrow(BodyError);
    expect(() => parse('[{"eventID": "x",')).toThrow(BodyError);
  });

  it('returns nothing for an empty body or an empty Records list', () => {
    expect(parse('').events).toEqual([]);
    expect(parse('{"Records": []}')).toEqual({ events: [], rejected: [], rejectedCount: 0, records: 0, skipped: 0 });
  });
});

describe('parseAwsTime', () => {
  it('reads CloudTrail human-readable timestamps as UTC', () => {
    expect(parseAwsTime('Jul 30, 2024, 9:46:15 PM')).toBe(Date.UTC(2024, 6, 30, 21, 46, 15));
    expect(parseAwsTime('Aug 1, 2024, 11:45:22 AM')).toBe(Date.UTC(2024, 7, 1, 11, 45, 22));
    expect(parseAwsTime('Aug 1, 2024 1:33:28 PM')).toBe(Date.UTC(2024, 7, 1, 13, 33, 28));
    expect(parseAwsTime('Jan 2, 2025, 12:05:00 AM')).toBe(Date.UTC(2025, 0, 2, 0, 5, 0));
    expect(parseAwsTime('Jan 2, 2025, 12:05:00 PM')).toBe(Date.UTC(2025, 0, 2, 12, 5, 0));
    expect(parseAwsTime('Jan 2, 2025, 7:13:35\u202fPM')).toBe(Date.UTC(2025, 0, 2, 19, 13, 35));
  });

  it('reads ISO 8601, treating a missing offset as UTC, and rejects anything else', () => {
    expect(parseAwsTime('2024-08-01T11:45:22Z')).toBe(Date.UTC(2024, 7, 1, 11, 45, 22));
    expect(parseAwsTime('2024-08-01T11:45:22.500Z')).toBe(Date.UTC(2024, 7, 1, 11, 45, 22, 500));
    expect(parseAwsTime('2024-08-01T11:45:22')).toBe(Date.UTC(2024, 7, 1, 11, 45, 22));
    expect(parseAwsTime('2024-08-01T13:45:22+02:00')).toBe(Date.UTC(2024, 7, 1, 11, 45, 22));
    expect(parseAwsTime('Foo 1, 2024, 1:00:00 PM')).toBeUndefined();
    expect(parseAwsTime('Aug 1, 2024, 13:00:00 PM')).toBeUndefined();
    expect(parseAwsTime(1722512722)).toBeUndefined();
    expect(parseAwsTime('')).toBeUndefined();
  });
});

describe('stripApiVersion', () => {
  it('removes the version suffixes Lambda and CloudFront put in event names', () => {
    expect(stripApiVersion('GetFunction20150331v2')).toBe('GetFunction');
    expect(stripApiVersion('Invoke20150331')).toBe('Invoke');
    expect(stripApiVersion('GetDistribution2020_05_31')).toBe('GetDistribution');
    expect(stripApiVersion('GetObject')).toBe('GetObject');
  });
});
