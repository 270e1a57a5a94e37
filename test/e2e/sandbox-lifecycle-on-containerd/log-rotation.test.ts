import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { FastSandboxClient } from "@fast-sandbox/sdk";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

// The agents this case starts inherit it: a sandbox's log is rotated past 64 KiB (checked every 2 s).
const MAX_BYTES = 64 * 1024;
process.env.FSB_SANDBOX_LOG_MAX_BYTES = String(MAX_BYTES);

const LINES = 200;
/** ~1 KiB lines, one every 50 ms or so: ~200 KiB over ~10 s, rotated two or three times meanwhile. */
const WRITER = `i=0; while [ $i -lt ${LINES} ]; do i=$((i+1)); printf "line %06d %01000d\\n" $i 0; sleep 0.05; done`;

const decoder = new TextDecoder();

async function readLogs(client: FastSandboxClient, name: string, follow: boolean): Promise<string> {
  let text = "";
  for await (const chunk of client.sandboxes.logs(name, { follow })) text += decoder.decode(chunk, { stream: true });
  return text;
}

/** The line numbers in a log, checked to be whole lines in strictly increasing order (nothing twice). */
function lineNumbers(text: string): number[] {
  const numbers = text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      const match = /^line (\d{6}) 0{1000}$/.exec(line);
      assert.ok(match, `a whole line of the writer: ${JSON.stringify(line.slice(0, 40))}…`);
      return Number(match[1]);
    });
  for (let i = 1; i < numbers.length; i++)
    assert.ok((numbers[i] ?? 0) > (numbers[i - 1] ?? 0), `line ${numbers[i]} after ${numbers[i - 1]}: out of order or twice`);
  return numbers;
}

function size(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

describe("a sandbox's log is rotated on the real containerd", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({ name: "logrotate", pools: [pool("default", { maxSandboxesPerPod: 2 })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("keeps the log near its limit while the sandbox writes, a follower reads across the rotations, and delete removes every part", async () => {
    const { client, dataDir } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sh", "-c", WRITER], consistencyMode: "strong" });
    const name = sandbox.metadata.name;
    const log = join(dataDir, "agents", sandbox.status?.assignedPod ?? "", "logs", `${sandbox.status?.sandboxID ?? ""}.log`);
    assert.ok(existsSync(log), `the sandbox's log at ${log}`);

    // Following from the start ends when the command exits, having read through every rotation.
    let largest = 0;
    const sampling = setInterval(() => (largest = Math.max(largest, size(log))), 100);
    const followed = await readLogs(client, name, true).finally(() => clearInterval(sampling));
    const seen = lineNumbers(followed);
    assert.equal(seen[0], 1);
    assert.equal(seen.at(-1), LINES);
    // A rotation loses what lands between its copy and its truncation (microseconds; log-rotation.ts).
    assert.ok(seen.length >= LINES * 0.95, `followed ${seen.length} of ${LINES} lines`);
    assert.ok(existsSync(`${log}.1`), "rotated at least once");
    // Checked every 2 s: the log never grew far past the limit (~20 KiB/s written).
    assert.ok(largest < MAX_BYTES + 128 * 1024, `the log reached ${largest} bytes`);

    // The next check leaves the log within its limit; a plain read returns the rotated part, then the log.
    await waitFor(async () => size(log) <= MAX_BYTES, 10_000, "the log within its limit");
    const text = await readLogs(client, name, false);
    assert.equal(Buffer.byteLength(text), size(`${log}.1`) + size(log), "the read returns what the two parts hold");
    const kept = lineNumbers(text);
    assert.equal(kept.at(-1), LINES);
    assert.ok(kept.length < LINES, `only the last parts are kept (${kept.length} lines)`);

    await client.sandboxes.delete(name);
    assert.ok(!existsSync(log) && !existsSync(`${log}.1`) && !existsSync(`${log}.1.tmp`), "delete removes the log and its rotated part");
  });
});
