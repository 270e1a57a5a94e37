/**
 * `npm test` runs this before and after its tests: it removes what test runs stopped midway left on
 * the host (test/support/test-leftovers.ts says what, and what it never touches). Prints what it
 * removed; exits 1 when something could not be removed.
 *
 *   node --conditions=development --import tsx scripts/sweep-test-leftovers.ts
 */
import { sweepTestLeftovers } from "../test/support/test-leftovers.js";

const { removed, problems } = await sweepTestLeftovers();
for (const line of removed) console.error(`sweep-test-leftovers: removed ${line}`);
for (const line of problems) console.error(`sweep-test-leftovers: could not remove ${line}`);
if (removed.length === 0 && problems.length === 0) console.error("sweep-test-leftovers: nothing left by earlier test runs");
process.exitCode = problems.length > 0 ? 1 : 0;
