// The install-node-binaries init container of the suite's agent Pods (image
// fast-sandbox/agent-node-binaries:e2e in ../images.json, run through in-pod.js): what
// config/agent's does from the agent image, here from the repository and the host. Copies the
// in-sandbox helper (packages/agent/helper/build/fsb-helper, built by `npm run build`) and runsc
// (from PATH; skipped with a warning when the host has none: gvisor pools then cannot run) into
// FSB_NODE_BINARIES_DIR, each through a temporary name and a rename, so a running sandbox never
// sees a half-written file.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, renameSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const target = process.env.FSB_NODE_BINARIES_DIR;
if (!target || !existsSync(target)) {
  console.error(`install-node-binaries: FSB_NODE_BINARIES_DIR (${target ?? "unset"}) is not a directory`);
  process.exit(1);
}
const helper = fileURLToPath(new URL("../../../../packages/agent/helper/build/fsb-helper", import.meta.url));
if (!existsSync(helper)) {
  console.error(`install-node-binaries: the helper is missing at ${helper}; run npm run build`);
  process.exit(1);
}

function which(command) {
  try {
    return execFileSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const binaries = [["fsb-helper", helper]];
const runsc = which("runsc");
if (runsc) binaries.push(["runsc", runsc]);
else console.error("install-node-binaries: no runsc on PATH; gvisor pools cannot run on this node");

for (const [name, source] of binaries) {
  const temporary = path.join(target, `.${name}.${process.pid}`);
  copyFileSync(source, temporary);
  renameSync(temporary, path.join(target, name));
  console.log(`install-node-binaries: ${source} -> ${path.join(target, name)}`);
}
