import type { Detector } from './detector.ts';
import { blastRadiusDetector } from './blast-radius/index.ts';
import { credentialLifecycleDetector } from './credential-lifecycle/index.ts';
import { lateralMovementDetector } from './lateral-movement/index.ts';
import { toolChaining } from './tool-chaining/index.ts';

/**
 * Every detector Runtrail runs, listed explicitly (no discovery by globbing). Adding a detector is
 * one folder under `detectors/` plus one line here.
 */
export const DETECTORS: ReadonlyArray<Detector<never>> = [
  lateralMovementDetector as Detector<never>,
  credentialLifecycleDetector as Detector<never>,
  blastRadiusDetector as Detector<never>,
  toolChaining as Detector<never>,
];
