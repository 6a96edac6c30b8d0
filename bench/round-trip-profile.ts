// Summary of a DevTools CPU profile (bench/round-trip.ts --cpu-profile FILE): the functions by self time, and the call
// tree below the functions whose names match --root (by total time, children shown down to --min percent). Time is
// counted in samples, not in the samples' time deltas: on a loaded machine the sampler is descheduled now and then,
// and the long gaps that follow would all be charged to whatever ran when it woke up.
//
//   npx tsx bench/round-trip-profile.ts FILE [--top N] [--root NAME[,NAME]] [--min PERCENT] [--depth D]
import fs from 'node:fs';
import { intFlag, stringFlag } from './args.js';

interface Frame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: Frame;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const args = process.argv.slice(2);
const TOP = intFlag(args, '--top', 40);
const DEPTH = intFlag(args, '--depth', 12);
const MIN = Number(stringFlag(args, '--min') ?? '0.3');
const roots = stringFlag(args, '--root')?.split(',') ?? [];
const file = args[0];
if (!file) throw new Error('usage: round-trip-profile.ts FILE [--top N] [--root NAMES] [--min PERCENT] [--depth D]');
const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
// every sample counts as the profile's median interval
const interval = [...profile.timeDeltas].sort((a, b) => a - b)[profile.timeDeltas.length >> 1] ?? 0;
for (const id of profile.samples) selfUs.set(id, (selfUs.get(id) ?? 0) + interval);
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
const totals = new Map<number, number>();
const total = (n: ProfileNode): number => {
  let t = totals.get(n.id);
  if (t === undefined) {
    t = (selfUs.get(n.id) ?? 0) + (n.children ?? []).reduce((a, c) => a + total(byId.get(c)!), 0);
    totals.set(n.id, t);
  }
  return t;
};
const name = (f: Frame): string =>
  `${f.functionName || '(anonymous)'} ${f.url.split('/').pop() ?? ''}:${f.lineNumber + 1}`.trim();
const pct = (us: number): string => `${((100 * us) / totalUs).toFixed(2).padStart(6)} %`;

console.log(`${file}: ${profile.samples.length} samples, ${interval} µs apart (median)`);
const self = new Map<string, number>();
for (const n of profile.nodes)
  self.set(name(n.callFrame), (self.get(name(n.callFrame)) ?? 0) + (selfUs.get(n.id) ?? 0));
console.log('\nself time:');
for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${pct(us)}  ${k}`);

function tree(n: ProfileNode, depth: number, indent: string): void {
  const t = total(n);
  if ((100 * t) / totalUs < MIN || depth > DEPTH) return;
  console.log(`${pct(t)} ${pct(selfUs.get(n.id) ?? 0)}  ${indent}${name(n.callFrame)}`);
  const kids = (n.children ?? []).map((c) => byId.get(c)!).sort((a, b) => total(b) - total(a));
  for (const k of kids) tree(k, depth + 1, indent + '  ');
}
if (roots.length > 0) {
  console.log('\ncall tree (total, self) below ' + roots.join(', ') + ':');
  for (const n of profile.nodes)
    if (roots.some((r) => n.callFrame.functionName === r)) {
      const parentMatches = profile.nodes.some(
        (p) => p.children?.includes(n.id) && roots.includes(p.callFrame.functionName),
      );
      if (!parentMatches) tree(n, 0, '');
    }
}
