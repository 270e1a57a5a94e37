#!/usr/bin/env node
// The `fsb` command (bin/kubectl-fs is the same program as the kubectl plugin `kubectl fs`).
import("../dist/main.js").catch((error) => {
  if (error && error.code === "ERR_MODULE_NOT_FOUND") {
    process.stderr.write("error: fsb is not built yet; run 'npm run build' (or 'npm run up') in the repository first\n");
    process.exit(1);
  }
  throw error;
});
