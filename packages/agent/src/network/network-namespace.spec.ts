/** Against the real iproute2 of this host (root), with a namespace of its own. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { IpNetworkNamespaces } from "./network-namespace.js";

const NAME = `fsb-netns-spec-${process.pid}`;
const namespaces = new IpNetworkNamespaces();
const listed = () => execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).includes(NAME);

after(async () => {
  await namespaces.delete(NAME);
});

describe("IpNetworkNamespaces", () => {
  it("creates a named namespace under /run/netns, refuses a second one of the name, and deletes it, twice", async () => {
    assert.equal(namespaces.exists(NAME), false);
    assert.equal(await namespaces.create(NAME), `/run/netns/${NAME}`);
    assert.ok(namespaces.exists(NAME) && listed());
    // Only loopback, down: the namespace is empty until CNI fills it.
    assert.match(execFileSync("ip", ["-n", NAME, "-o", "link"], { encoding: "utf8" }).trim(), /^1: lo: <LOOPBACK> /);
    await assert.rejects(namespaces.create(NAME), FsbError);
    await namespaces.delete(NAME);
    await namespaces.delete(NAME);
    assert.ok(!namespaces.exists(NAME) && !listed());
  });

  it("refuses names that are not one path segment", () => {
    assert.throws(
      () => namespaces.path("../etc"),
      (error: unknown) => error instanceof FsbError && error.code === "invalid_argument",
    );
    assert.throws(() => namespaces.path(""), FsbError);
  });
});
