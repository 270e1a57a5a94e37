import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { SignedFileLookup, type UrlSigners } from "./signed-file-lookup.js";
import { fileSignature, type SignedFileRequest } from "./signed-file-url.js";

function sandbox(i: number): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: `s${i}`, namespace: "default" },
    spec: { image: "busybox", poolRef: "default" },
    status: { phase: "Running", sandboxID: `id-${i}` },
  };
}

/** `count` signing sandboxes (token `token-<i>`), counting the signatures each scan and remembered check computes. */
function signers(count: number): UrlSigners & { listed: number; records: Sandbox[] } {
  const records = Array.from({ length: count }, (_, i) => sandbox(i));
  const tokens = new Map(records.map((record, i) => [record, `token-${i}`]));
  const result = {
    listed: 0,
    records,
    *list() {
      for (const record of records) {
        result.listed += 1;
        yield { sandbox: record, token: tokens.get(record)! };
      }
    },
    tokenOf: (record: Sandbox) => tokens.get(record),
  };
  return result;
}

function request(path: string, token: string): SignedFileRequest {
  const unsigned = { path, operation: "read" as const, username: "" };
  return { ...unsigned, signature: fileSignature(unsigned, token) };
}

describe("SignedFileLookup", () => {
  it("finds the sandbox whose token signed a URL, and the same URL again without a scan", async () => {
    const from = signers(50);
    const lookup = new SignedFileLookup({ signers: from, lookup: (id) => Promise.resolve(from.records.find((r) => r.status?.sandboxID === id)) });
    const url = request("/tmp/a.txt", "token-37");
    const first = await lookup.find(url);
    assert.equal(first !== "busy" && first !== "unmatched" && first.sandbox.metadata.name, "s37");
    assert.equal(from.listed, 38);
    const again = await lookup.find(url);
    assert.equal(again !== "busy" && again !== "unmatched" && again.sandbox.metadata.name, "s37");
    assert.equal(from.listed, 38, "a remembered URL is checked against its sandbox alone");
    assert.equal(await lookup.find(request("/tmp/a.txt", "nobody's token")), "unmatched");
  });

  it("forgets a remembered URL whose sandbox is gone, and looks for it again", async () => {
    const from = signers(3);
    let present = true;
    const lookup = new SignedFileLookup({
      signers: from,
      lookup: (id) => Promise.resolve(present ? from.records.find((r) => r.status?.sandboxID === id) : undefined),
    });
    const url = request("/tmp/a.txt", "token-1");
    assert.notEqual(await lookup.find(url), "unmatched");
    present = false;
    from.listed = 0;
    const found = await lookup.find(url);
    assert.equal(found !== "busy" && found !== "unmatched" && found.sandbox.metadata.name, "s1", "the scan still finds it");
    assert.equal(from.listed, 2);
  });

  it("answers busy once scans for unknown signatures used up their budget, serves remembered URLs meanwhile, and refills", async () => {
    const from = signers(10);
    let now = 0;
    // Every signature computed takes the fake clock 1 ms: a scan of 10 sandboxes costs 10 ms.
    const counting: UrlSigners = {
      *list() {
        for (const signer of from.list()) {
          now += 1;
          yield signer;
        }
      },
      tokenOf: from.tokenOf,
    };
    const lookup = new SignedFileLookup({
      signers: counting,
      lookup: (id) => Promise.resolve(from.records.find((r) => r.status?.sandboxID === id)),
      unmatchedMsPerSecond: 10,
      unmatchedBurstMs: 25,
      now: () => now,
    });
    const known = request("/tmp/known.txt", "token-0");
    assert.notEqual(await lookup.find(known), "unmatched");
    const forged = (i: number) => request(`/tmp/${i}`, `forged-${i}`);
    const answers: string[] = [];
    for (let i = 0; i < 5; i++) answers.push((await lookup.find(forged(i))) as string);
    // 25 ms of budget: scans go on while some is left (the third overdraws it), then none.
    assert.deepEqual(answers, ["unmatched", "unmatched", "unmatched", "busy", "busy"]);
    const remembered = await lookup.find(known);
    assert.ok(remembered !== "busy" && remembered !== "unmatched", "a remembered URL is served while the budget is out");
    // 10 ms per second: a second later the budget is back above zero for one more scan.
    now += 1000;
    assert.equal(await lookup.find(forged(9)), "unmatched");
    assert.equal(await lookup.find(forged(10)), "busy");
  });

  it("remembers at most `remembered` URLs, the least recently used going first", async () => {
    const from = signers(4);
    const lookup = new SignedFileLookup({
      signers: from,
      lookup: (id) => Promise.resolve(from.records.find((r) => r.status?.sandboxID === id)),
      remembered: 2,
    });
    const urls = [0, 1, 2].map((i) => request(`/f${i}`, `token-${i}`));
    for (const url of urls) await lookup.find(url);
    from.listed = 0;
    await lookup.find(urls[2]!);
    await lookup.find(urls[1]!);
    assert.equal(from.listed, 0, "the two most recent are remembered");
    await lookup.find(urls[0]!);
    assert.equal(from.listed, 1, "the oldest was forgotten: scanned again");
  });
});
