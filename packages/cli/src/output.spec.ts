import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { age, printObjects, printTable } from "./output.js";

/** Runs `fn` and returns what it wrote to stdout (synchronously, so nothing else writes meanwhile). */
function captureStdout(fn: () => void): string {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = (chunk: string | Uint8Array) => {
    chunks.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString());
    return true;
  };
  try {
    fn();
  } finally {
    process.stdout.write = write;
  }
  return chunks.join("");
}

describe("age", () => {
  const now = Date.parse("2026-01-10T12:00:00Z");
  const before = (seconds: number) => new Date(now - seconds * 1000).toISOString();

  it("shows seconds below 2 minutes, minutes below 2 hours, hours below 2 days, then days", () => {
    assert.equal(age(before(0), now), "0s");
    assert.equal(age(before(119), now), "119s");
    assert.equal(age(before(120), now), "2m");
    assert.equal(age(before(7199), now), "119m");
    assert.equal(age(before(7200), now), "2h");
    assert.equal(age(before(172_799), now), "47h");
    assert.equal(age(before(172_800), now), "2d");
    assert.equal(age(before(30 * 86_400), now), "30d");
  });

  it("shows 0s for times in the future (clock skew)", () => {
    assert.equal(age(before(-60), now), "0s");
  });

  it("shows <unknown> for a missing or unparsable time", () => {
    assert.equal(age(undefined, now), "<unknown>");
    assert.equal(age("", now), "<unknown>");
    assert.equal(age("yesterday", now), "<unknown>");
  });
});

describe("printTable", () => {
  it("pads every column but the last to its widest cell, three spaces apart", () => {
    const output = captureStdout(() =>
      printTable(
        ["NAME", "PHASE", "IMAGE"],
        [
          ["a", "Running", "python:3.12"],
          ["longer-name", "Pending", "x"],
        ],
      ),
    );
    assert.equal(output, ["NAME          PHASE     IMAGE", "a             Running   python:3.12", "longer-name   Pending   x", ""].join("\n"));
  });

  it("prints only the headers for no rows and trims trailing spaces of empty last cells", () => {
    assert.equal(
      captureStdout(() => printTable(["A", "B"], [])),
      "A   B\n",
    );
    assert.equal(
      captureStdout(() => printTable(["NAME", "AGENT"], [["sandbox", ""]])),
      "NAME      AGENT\nsandbox\n",
    );
  });
});

describe("printObjects", () => {
  const value = { kind: "List", items: [{ name: "a" }] };

  it("prints JSON and YAML that parse back to the value", () => {
    assert.deepEqual(JSON.parse(captureStdout(() => printObjects("json", value, () => assert.fail("no table")))), value);
    assert.deepEqual(parse(captureStdout(() => printObjects("yaml", value, () => assert.fail("no table")))), value);
  });

  it("calls the table printer for the table format", () => {
    assert.equal(
      captureStdout(() => printObjects("table", value, () => process.stdout.write("table!\n"))),
      "table!\n",
    );
  });
});
