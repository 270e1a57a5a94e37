/** Against the real iproute2 of this host (root), in a network namespace of its own (removed at the end). */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { IpBridgePorts } from "./bridge-ports.js";

// fsbt-: a run stopped midway leaves it to the test sweep (test/support/test-leftovers.ts).
const NETNS = `fsbt-bridge-ports-${process.pid}`;
const dir = mkdtempSync(join(tmpdir(), "fsb-bridge-ports-"));
/** `ip`, run in the spec's namespace. */
const ip = join(dir, "ip");
const sh = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const groupOf = (name: string) => /\bgroup (\S+)/.exec(sh("-n", NETNS, "-d", "link", "show", "dev", name))?.[1];

before(() => {
  sh("netns", "add", NETNS);
  sh("-n", NETNS, "link", "add", "porta", "type", "veth", "peer", "name", "portb");
  writeFileSync(ip, `#!/bin/sh\nexec ip -n ${NETNS} "$@"\n`);
  chmodSync(ip, 0o755);
});

after(() => {
  try {
    sh("netns", "delete", NETNS);
  } catch {
    // never made
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("IpBridgePorts", () => {
  it("sets the device group of every interface in one ip process", async () => {
    assert.equal(groupOf("porta"), "default");
    await new IpBridgePorts(ip).mark(["porta", "portb"], 123456);
    assert.equal(groupOf("porta"), "123456");
    assert.equal(groupOf("portb"), "123456");
  });

  it("marks the others and rejects, naming the interface, when one is missing", async () => {
    await assert.rejects(new IpBridgePorts(ip).mark(["gone0", "porta"], 654321), (error: unknown) => error instanceof FsbError && /gone0/.test(error.message));
    assert.equal(groupOf("porta"), "654321");
  });

  it("refuses what is not an interface name (a batch line of its own), and does nothing for none", async () => {
    await assert.rejects(new IpBridgePorts(ip).mark(["porta group 1\nlink set dev portb down"], 1), FsbError);
    await new IpBridgePorts("/nonexistent/ip").mark([], 1);
  });
});
