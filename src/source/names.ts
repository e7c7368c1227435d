// Run labels that never collide: two watched directories with the same base name (`--dir a/run
// --dir b/run`, or the same sub-directory name under two roots) would give duplicate series and
// a webhook that acts on whichever it finds first. Pure, and decided from the whole set of
// locations, so the labels do not depend on discovery order.
import { sep } from 'node:path';

/** Gives every location a unique name: colliding names take as many parent directories as it takes to tell them apart. */
export function nameApart<L extends { name: string; dir: string }>(locs: readonly L[]): Map<L, string> {
  const out = new Map<L, string>();
  const groups = new Map<string, L[]>();
  for (const l of locs) {
    const g = groups.get(l.name);
    if (g) g.push(l);
    else groups.set(l.name, [l]);
  }
  for (const [name, g] of groups) {
    if (g.length === 1) {
      out.set(g[0], name);
      continue;
    }
    const parts = g.map((l) => l.dir.split(sep).filter((p) => p !== ''));
    const max = Math.max(...parts.map((p) => p.length));
    let names: string[] = g.map(() => name);
    for (let n = 2; n <= max; n++) {
      names = parts.map((p) => p.slice(-n).join('/'));
      if (new Set(names).size === names.length) break;
    }
    // Identical paths cannot reach here (discovery de-duplicates by realpath); equal suffixes
    // of unequal length still tie, so the last resort is the full path.
    if (new Set(names).size !== names.length) names = g.map((l) => l.dir);
    g.forEach((l, i) => out.set(l, names[i]));
  }
  return out;
}
