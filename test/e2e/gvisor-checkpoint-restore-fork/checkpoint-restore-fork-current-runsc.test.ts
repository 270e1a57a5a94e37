/**
 * The checkpoint, restore and fork suite on a current runsc, built from the Go module proxy by
 * scripts/build-runsc.sh (once; cached outside the repository, CI builds it in a phase before).
 */
import { execFileSync } from "node:child_process";
import { REPO_ROOT } from "../../support/containerd.js";
import { checkpointRestoreForkSuite } from "./checkpoint-restore-fork.suite.js";

checkpointRestoreForkSuite({
  label: "a current runsc",
  runscPath: () =>
    execFileSync("bash", ["scripts/build-runsc.sh"], { cwd: REPO_ROOT, encoding: "utf8", timeout: 30 * 60_000, stdio: ["ignore", "pipe", "inherit"] }).trim(),
  copyIdentityBy: "hostname",
  inPlaceResumedBy: "signal",
  tcpTimeWait: "saved",
});
