import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ClaimJournal } from "./claim-journal.js";
import type { OciSpec } from "./oci-spec.js";

describe("ClaimJournal", () => {
  const stateDir = mkdtempSync(join(tmpdir(), "fsb-claim-journal-"));
  after(() => rmSync(stateDir, { recursive: true, force: true }));

  it("keeps each claim until it is removed, whole, one file per sandbox", () => {
    const journal = new ClaimJournal(stateDir);
    assert.deepEqual(journal.pending(), [], "nothing before the first claim (no directory yet)");
    const a = { sandboxId: "sb-a", containerId: "fsb-prepared-1", labels: { "fast-sandbox.io/sandbox-id": "sb-a" } };
    const b = {
      sandboxId: "sb-b",
      containerId: "fsb-prepared-2",
      labels: { "fast-sandbox.io/sandbox-id": "sb-b" },
      // Only stored and read back: a part of a spec stands for all of it.
      ociSpec: { ociVersion: "1.1.0", process: { args: ["sh"], cwd: "/", env: ["A=1"] } } as unknown as OciSpec,
    };
    journal.write(a);
    journal.write(b);
    assert.equal(statSync(join(stateDir, "claims", "sb-b.json")).mode & 0o777, 0o600, "root alone reads a claim (it holds the user's env)");
    const byId = (records: { sandboxId: string }[]) => [...records].sort((x, y) => x.sandboxId.localeCompare(y.sandboxId));
    assert.deepEqual(byId(new ClaimJournal(stateDir).pending()), [a, b], "another process (the next start) reads them back");
    journal.remove("sb-a");
    journal.remove("sb-missing");
    assert.deepEqual(new ClaimJournal(stateDir).pending(), [b]);
    journal.write({ ...b, containerId: "fsb-prepared-3" });
    assert.deepEqual(new ClaimJournal(stateDir).pending(), [{ ...b, containerId: "fsb-prepared-3" }], "a claim written again replaces the first");
    journal.remove("sb-b");
    assert.deepEqual(readdirSync(join(stateDir, "claims")), []);
  });

  it("drops what a crash left half-written or unreadable instead of failing the agent's start", () => {
    const journal = new ClaimJournal(stateDir);
    const good = { sandboxId: "sb-good", containerId: "c", labels: {} };
    journal.write(good);
    writeFileSync(join(stateDir, "claims", "sb-torn.json.123.tmp"), '{"sandboxId":');
    writeFileSync(join(stateDir, "claims", "sb-bad.json"), "not json");
    writeFileSync(join(stateDir, "claims", "sb-partial.json"), JSON.stringify({ sandboxId: "sb-partial" }));
    assert.deepEqual(journal.pending(), [good]);
    assert.deepEqual(readdirSync(join(stateDir, "claims")), ["sb-good.json"]);
    journal.remove("sb-good");
  });
});
