import type { Detector } from './detector.ts';

/**
 * Every detector Runtrail runs, listed explicitly (no discovery by globbing). Adding a detector is
 * one folder under `detectors/` plus one line here.
 */
export const DETECTORS: ReadonlyArray<Detector<never>> = [];
