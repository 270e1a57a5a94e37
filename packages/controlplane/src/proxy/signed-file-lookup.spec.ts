import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { SignedFileLookup, clientKey, type ScanBudget, type UrlSigners } from "./signed-file-lookup.js";
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

  /** 10 sandboxes; every signature computed takes the fake clock 1 ms: a full scan costs 10 ms. */
  function timedLookup(options: { perClient?: ScanBudget; total?: ScanBudget }) {
    const from = signers(10);
    const clock = { now: 0 };
    const counting: UrlSigners = {
      *list() {
        for (const signer of from.list()) {
          clock.now += 1;
          yield signer;
        }
      },
      tokenOf: from.tokenOf,
    };
    const lookup = new SignedFileLookup({
      signers: counting,
      lookup: (id) => Promise.resolve(from.records.find((r) => r.status?.sandboxID === id)),
      ...options,
      now: () => clock.now,
    });
    return { lookup, clock };
  }
  const forged = (i: number) => request(`/tmp/${i}`, `forged-${i}`);
  const big = { msPerSecond: 1000, burstMs: 10_000 };

  it("answers a client busy once its scans used up its budget, serves others and remembered URLs meanwhile, and refills", async () => {
    const { lookup, clock } = timedLookup({ perClient: { msPerSecond: 10, burstMs: 25 }, total: big });
    const known = request("/tmp/known.txt", "token-9");
    assert.notEqual(await lookup.find(known, "flooder"), "unmatched");
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push((await lookup.find(forged(i), "flooder")) as string);
    // 25 ms: the known URL's scan (10) and two more, the second overdrawing it; then none.
    assert.deepEqual(answers, ["unmatched", "unmatched", "busy", "busy"]);
    assert.equal(await lookup.find(forged(5), "someone-else"), "unmatched", "another client has its own budget");
    const remembered = await lookup.find(known, "flooder");
    assert.ok(remembered !== "busy" && remembered !== "unmatched", "a remembered URL is served while the budget is out");
    // 10 ms per second: a second later the budget is back above zero for one more scan.
    clock.now += 1000;
    assert.equal(await lookup.find(forged(9), "flooder"), "unmatched");
    assert.equal(await lookup.find(forged(10), "flooder"), "busy");
  });

  it("charges scans that find their sandbox too: new URLs signed by one's own sandbox use up one's budget", async () => {
    const { lookup } = timedLookup({ perClient: { msPerSecond: 0, burstMs: 25 }, total: big });
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) {
      const found = await lookup.find(request(`/tmp/new-${i}`, "token-9"), "signer");
      answers.push(typeof found === "string" ? found : "found");
    }
    assert.deepEqual(answers, ["found", "found", "found", "busy"]);
  });

  it("counts an IPv6 client by its /64, an IPv4 one by its address (however written)", async () => {
    assert.equal(clientKey("2001:db8:aa:bb:1:2:3:4"), "2001:db8:aa:bb::/64");
    assert.equal(clientKey("2001:db8:aa:bb::99"), "2001:db8:aa:bb::/64");
    assert.equal(clientKey("2001:0db8::1"), "2001:db8:0:0::/64");
    assert.equal(clientKey("::1"), "0:0:0:0::/64");
    assert.equal(clientKey("::ffff:192.0.2.7"), "192.0.2.7");
    assert.equal(clientKey("192.0.2.7"), "192.0.2.7");
    const { lookup } = timedLookup({ perClient: { msPerSecond: 0, burstMs: 15 }, total: big });
    assert.equal(await lookup.find(forged(0), "2001:db8:aa:bb::1"), "unmatched");
    assert.equal(await lookup.find(forged(1), "2001:db8:aa:bb::2"), "unmatched");
    assert.equal(await lookup.find(forged(2), "2001:db8:aa:bb::3"), "busy", "another address of the same /64 shares its budget");
    assert.equal(await lookup.find(forged(3), "2001:db8:aa:cc::1"), "unmatched");
  });

  it("answers everyone busy once all clients together used up the total", async () => {
    const { lookup } = timedLookup({ perClient: big, total: { msPerSecond: 0, burstMs: 25 } });
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push((await lookup.find(forged(i), `client-${i}`)) as string);
    assert.deepEqual(answers, ["unmatched", "unmatched", "unmatched", "busy"]);
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
