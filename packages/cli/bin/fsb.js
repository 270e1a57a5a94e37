#!/usr/bin/env node
// The `fsb` command (bin/kubectl-fs is the same program as the kubectl plugin `kubectl fs`).
// It runs the bundle `npm run build` makes (dist/bundle/fsb.mjs, scripts/bundle-cli.ts), which starts
// in a fraction of the time tsc's hundreds of modules take; without it, or when `tsc -b` rebuilt a
// bundled package after it, tsc's output (dist/main.js): slower, never stale.
import module from "node:module";
import { statSync } from "node:fs";

// Node >= 22.1 keeps compiled code on disk (os.tmpdir()/node-compile-cache) for the next run; Node 20 has no such cache.
module.enableCompileCache?.();

const modified = (path) => statSync(new URL(path, import.meta.url), { throwIfNoEntry: false })?.mtimeMs ?? Number.NaN;
const bundled = modified("../dist/bundle/fsb.mjs");
const fresh = ["../tsconfig.tsbuildinfo", "../../sdk/tsconfig.tsbuildinfo", "../../api/tsconfig.tsbuildinfo"].every((path) => !(modified(path) > bundled));

import(bundled > 0 && fresh ? "../dist/bundle/fsb.mjs" : "../dist/main.js").catch((error) => {
  if (error && error.code === "ERR_MODULE_NOT_FOUND") {
    const program = /kubectl-fs$/.test(process.argv[1] ?? "") ? "kubectl fs" : "fsb";
    process.stderr.write(`error: ${program} is not built yet; run 'npm run build' (or 'npm run up') in the repository first\n`);
    process.exit(1);
  }
  throw error;
});
