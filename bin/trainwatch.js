#!/usr/bin/env node
// The trainwatch command. The TypeScript is compiled into dist/ by `npm ci` (prepare script).
import { existsSync } from 'node:fs';
const entry = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('trainwatch: dist/ is missing. Run `npm ci` (or `npm run build`) in the trainwatch directory first.\n');
  process.exit(2);
}
await import(entry.href);
