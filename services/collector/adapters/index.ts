import type { IngestFormat } from '../../../shared/event.ts';
import type { Adapter } from './adapter.ts';
import { cloudtrailAdapter } from './cloudtrail.ts';
import { falcoAdapter } from './falco.ts';
import { k8sAuditAdapter } from './k8s-audit.ts';
import { otlpLogsAdapter, otlpTracesAdapter } from './otlp.ts';
import { runtrailAdapter } from './runtrail.ts';
import { spireAdapter } from './spire.ts';
import { vaultAdapter } from './vault.ts';

/** Every source-format adapter, by format. The explicit registry of collectors' parsers. */
export const ADAPTERS: Readonly<Record<IngestFormat, Adapter>> = Object.freeze({
  'otlp-traces': otlpTracesAdapter,
  'otlp-logs': otlpLogsAdapter,
  cloudtrail: cloudtrailAdapter,
  vault: vaultAdapter,
  'k8s-audit': k8sAuditAdapter,
  falco: falcoAdapter,
  spire: spireAdapter,
  runtrail: runtrailAdapter,
});
