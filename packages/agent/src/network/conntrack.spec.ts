/** Against the host's connection tracking table (root, conntrack-tools), with documentation addresses (TEST-NET-3). */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { Conntrack } from "./conntrack.js";

const conntrack = (...args: string[]) => execFileSync("conntrack", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const tracked = (address: string) =>
  (conntrack("-L", "--orig-src", address) + conntrack("-L", "--orig-dst", address)).split("\n").filter((line) => line.includes(address)).length;

describe("Conntrack", () => {
  it("forgets the connections from and to an address, and only those", async () => {
    const [address, other] = ["203.0.113.7", "203.0.113.8"];
    const established = (from: string, to: string, port: string) =>
      conntrack("-I", "-s", from, "-d", to, "-p", "tcp", "--sport", port, "--dport", "443", "--state", "ESTABLISHED", "-t", "600", "-u", "ASSURED");
    established(address, "203.0.113.1", "40000");
    established("203.0.113.1", address, "40001");
    established(other, "203.0.113.1", "40002");
    try {
      assert.equal(tracked(address), 2);
      await new Conntrack().forget(address);
      assert.equal(tracked(address), 0);
      assert.equal(tracked(other), 1, "another address's connections stay");
      await new Conntrack().forget(address); // nothing left to delete: no failure
    } finally {
      await new Conntrack().forget(other);
    }
  });

  it("without the binary: fails with what to install, or, told so, says it once and goes on", async () => {
    await assert.rejects(
      new Conntrack({ binary: "/nonexistent/conntrack" }).forget("203.0.113.9"),
      (error: unknown) => error instanceof FsbError && error.code === "failed_precondition" && /apt-get install conntrack/.test(error.message),
    );
    const told: string[] = [];
    const lenient = new Conntrack({ binary: "/nonexistent/conntrack", onMissing: (message) => told.push(message) });
    await Promise.all([lenient.forget("203.0.113.9"), lenient.forget("203.0.113.10")]);
    await lenient.forget("203.0.113.11");
    assert.equal(told.length, 1);
    assert.match(told[0] ?? "", /handed out again with its last holder's tracked connections/);
  });
});
