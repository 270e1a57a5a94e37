import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { e2bEnvLines, shellWord } from "./e2b.js";

/** What bash makes of the lines: `eval "$(fsb e2b env)"`, then the three variables. */
function evaluated(lines: string): string[] {
  const script = `eval "$LINES"; printf '%s\\n' "$E2B_API_URL" "$E2B_SANDBOX_URL" "$E2B_API_KEY"`;
  return execFileSync("bash", ["-c", script], { env: { LINES: lines, PATH: process.env.PATH ?? "" }, encoding: "utf8" })
    .split("\n")
    .slice(0, 3);
}

describe("fsb e2b env", () => {
  it("prints exactly three export lines that eval sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY from", () => {
    const key = { apiKey: `e2b_${"ab".repeat(20)}`, apiUrl: "http://127.0.0.1:7073", sandboxUrl: "http://127.0.0.1:7072" };
    const lines = e2bEnvLines(key);
    assert.equal(lines, `export E2B_API_URL=http://127.0.0.1:7073\nexport E2B_SANDBOX_URL=http://127.0.0.1:7072\nexport E2B_API_KEY=e2b_${"ab".repeat(20)}\n`);
    assert.deepEqual(evaluated(lines), [key.apiUrl, key.sandboxUrl, key.apiKey]);
  });

  it("quotes what the shell would otherwise change", () => {
    const key = { apiKey: "e2b_0", apiUrl: "http://h:1/a b", sandboxUrl: "http://x/$(touch nope)'q'" };
    assert.deepEqual(evaluated(e2bEnvLines(key)), [key.apiUrl, key.sandboxUrl, key.apiKey]);
    assert.equal(shellWord("plain-1.2:3/x"), "plain-1.2:3/x");
    assert.equal(shellWord("it's"), `'it'\\''s'`);
  });
});
