// `npm run gen`: regenerates the checked-in files derived from the code's lists.
import { writeAlerts } from './alerts.js';

process.stdout.write(`wrote ${writeAlerts(process.cwd())}\n`);
