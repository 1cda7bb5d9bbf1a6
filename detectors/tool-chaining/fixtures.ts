import type { DetectorFixture } from '../detector.ts';

export const fixtures: DetectorFixture[] = [];
