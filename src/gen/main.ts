// `npm run gen`: regenerates the checked-in files derived from the code's lists
// (alerts/trainwatch.rules.yml, docs/metrics.md, docs/configuration.md). Run from the repo root.
import { writeAlerts } from './alerts.js';
import { writeDocs } from './docs.js';

const root = process.cwd();
process.stdout.write(`wrote ${writeAlerts(root)}\n`);
writeDocs(root);
process.stdout.write('wrote docs/metrics.md, docs/configuration.md\n');
