import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { AttachmentStore, isAttachmentId, type AttachmentRecord } from "./attachment-store.js";
import { LOOPBACK_NETWORK, sandboxNetworkList } from "./cni-conflist.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-attachment-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function record(id: string, overrides: Partial<AttachmentRecord> = {}): AttachmentRecord {
  return {
    version: 1,
    id,
    state: "preparing",
    owner: { agent: "agent-0", containerdNamespace: "fast-sandbox" },
    network: { name: "fsbt", subnet: "10.99.0.0/24" },
    netnsName: `fsb-fsbt-${id}`,
    netnsPath: `/run/netns/fsb-fsbt-${id}`,
    cniContainerId: `fsb-fsbt-${id}`,
    cniPluginDirs: ["/usr/lib/cni"],
    lists: { loopback: LOOPBACK_NETWORK, sandbox: sandboxNetworkList({ name: "fsbt", subnet: "10.99.0.0/24" }, dir) },
    createdAt: "2026-12-01T00:00:00.000Z",
    ...overrides,
  };
}

describe("AttachmentStore", () => {
  const store = new AttachmentStore(dir);

  it("writes, reads back, replaces and removes a record, leaving no temporary file", () => {
    store.write(record("0123456789ab"));
    assert.equal(store.read("0123456789ab")?.record.state, "preparing");
    store.write(record("0123456789ab", { state: "claimed", sandboxId: "sb-1" }));
    const stored = store.read("0123456789ab");
    assert.equal(stored?.record.sandboxId, "sb-1");
    assert.ok((stored?.changedAtMs ?? 0) > 0);
    assert.deepEqual(readdirSync(store.directory), ["0123456789ab.json"]);
    store.remove("0123456789ab");
    store.remove("0123456789ab");
    assert.equal(store.read("0123456789ab"), undefined);
  });

  it("lists the readable records and skips anything else in the directory", () => {
    store.write(record("aaaaaaaaaaaa"));
    store.write(record("bbbbbbbbbbbb", { state: "prepared" }));
    writeFileSync(join(store.directory, "cccccccccccc.json"), "{ half");
    writeFileSync(join(store.directory, "notes.txt"), "hello");
    writeFileSync(join(store.directory, "dddddddddddd.json"), JSON.stringify(record("eeeeeeeeeeee")));
    assert.deepEqual(
      store
        .list()
        .map((stored) => `${stored.record.id} ${stored.record.state}`)
        .sort(),
      ["aaaaaaaaaaaa preparing", "bbbbbbbbbbbb prepared"],
    );
  });

  it("refuses ids that are not 12 hex digits", () => {
    assert.ok(isAttachmentId("0123456789ab"));
    for (const id of ["../x", "0123456789AB", "0123456789a", ""]) assert.ok(!isAttachmentId(id), id);
    assert.throws(() => store.write(record("../../etc")));
    assert.equal(new AttachmentStore(join(dir, "missing")).list().length, 0);
  });
});
