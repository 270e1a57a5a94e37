import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { inCommandName } from "./failures.js";

describe("inCommandName", () => {
  const message =
    "--token: no access token for sandbox team/r1: pass --token, or run 'fsb token r1' (it rotates the token); try `fsb reset r1`, or npx fsb run -- sh";

  it("names the commands a message suggests as the kubectl plugin's", () => {
    assert.equal(
      inCommandName(message, "kubectl fs"),
      "--token: no access token for sandbox team/r1: pass --token, or run 'kubectl fs token r1' (it rotates the token); try `kubectl fs reset r1`, or kubectl fs run -- sh",
    );
  });

  it("leaves fsb's own messages, and words that only contain fsb, as they are", () => {
    assert.equal(inCommandName(message, "fsb"), message);
    const other = "the fsb-bench namespace and /usr/bin/fsb are not commands to suggest";
    assert.equal(inCommandName(other, "kubectl fs"), other);
  });
});
