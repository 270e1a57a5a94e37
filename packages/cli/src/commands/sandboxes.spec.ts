import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, ValidationError, type Sandbox } from "@fast-sandbox/api";
import { conditionRows, parseEgress, parseEnvs, parsePorts } from "./sandboxes.js";

function assertUsageError(parse: () => unknown, flag: string, message: RegExp): void {
  assert.throws(parse, (error: unknown) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, flag);
    assert.match(error.message, message);
    return true;
  });
}

describe("parsePorts", () => {
  it("reads ports 1..65535 in order", () => {
    assert.deepEqual(parsePorts(["8080", "1", "65535"]), [8080, 1, 65535]);
    assert.deepEqual(parsePorts([]), []);
  });

  it("rejects 0, 65536, negative, fractional and non-numeric ports as --port errors", () => {
    for (const value of ["0", "65536", "70000", "-1", "80.5", "http", "", " 80", "1e3"]) {
      assertUsageError(
        () => parsePorts(["80", value]),
        "--port",
        new RegExp(`${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is not a port; allowed: 1\\.\\.65535`),
      );
    }
  });
});

describe("parseEgress", () => {
  it("reads deny-all and allow-all, and nothing as the pool's policy", () => {
    assert.deepEqual(parseEgress(["deny-all"]), { policy: "denyAll" });
    assert.deepEqual(parseEgress(["allow-all"]), { policy: "allowAll" });
    assert.equal(parseEgress([]), undefined);
  });

  it("reads CIDRs with optional ports and protocol as an allow list, IPv6 included", () => {
    assert.deepEqual(parseEgress(["10.0.0.0/8:443,8443/tcp", "203.0.113.7/32", "2001:db8::/32:53/udp", "192.168.0.0/16/udp"]), {
      policy: "allowList",
      allow: [
        { cidr: "10.0.0.0/8", ports: [443, 8443], protocol: "tcp" },
        { cidr: "203.0.113.7/32" },
        { cidr: "2001:db8::/32", ports: [53], protocol: "udp" },
        { cidr: "192.168.0.0/16", protocol: "udp" },
      ],
    });
  });

  it("refuses deny-all or allow-all with anything else, and entries it cannot read, as --egress errors showing the form", () => {
    assert.throws(
      () => parseEgress(["deny-all", "10.0.0.0/8"]),
      (error: unknown) => error instanceof ValidationError && /deny-all stands alone/.test(error.message),
    );
    for (const value of ["10.0.0.0", "10.0.0.0/8:", "10.0.0.0/8:https", "10.0.0.0/8/icmp", "denyAll", ""]) {
      assert.throws(
        () => parseEgress([value]),
        (error: unknown) =>
          error instanceof ValidationError &&
          error.field === "--egress" &&
          /is not deny-all, allow-all or CIDR\[:PORT\[,PORT…\]\]\[\/tcp\|\/udp\]/.test(error.message),
        value,
      );
    }
  });
});

describe("parseEnvs", () => {
  it("splits at the first '=' and keeps empty values and later '='", () => {
    assert.deepEqual(parseEnvs(["A=1", "EMPTY=", "URL=a=b=c"]), [
      { name: "A", value: "1" },
      { name: "EMPTY", value: "" },
      { name: "URL", value: "a=b=c" },
    ]);
  });

  it("rejects entries without a name or without '=' as --env errors", () => {
    for (const entry of ["NOVALUE", "=value", ""]) {
      assertUsageError(() => parseEnvs([entry]), "--env", /is not NAME=VALUE/);
    }
  });
});

describe("conditionRows", () => {
  const now = Date.parse("2026-01-01T00:10:00Z");
  const sandbox = (conditions: NonNullable<Sandbox["status"]>["conditions"]): Sandbox => ({
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "hog", namespace: "default" },
    spec: { image: "img", poolRef: "default" },
    status: { phase: "Running", ...(conditions ? { conditions } : {}) },
  });

  it("lists every condition with its status, reason, age and message, OOMKilled included", () => {
    const rows = conditionRows(
      sandbox([
        { type: "Ready", status: "True", reason: "Started", lastTransitionTime: "2026-01-01T00:00:00Z" },
        {
          type: "OOMKilled",
          status: "True",
          reason: "OOMKilled",
          message: "the kernel's OOM killer killed a process",
          lastTransitionTime: "2026-01-01T00:09:30Z",
        },
      ]),
      now,
    );
    assert.deepEqual(rows, [
      ["Ready", "True", "Started", "10m", ""],
      ["OOMKilled", "True", "OOMKilled", "30s", "the kernel's OOM killer killed a process"],
    ]);
  });

  it("is empty for a sandbox without conditions and shows '-' for an unknown transition time", () => {
    assert.deepEqual(conditionRows(sandbox(undefined), now), []);
    assert.deepEqual(conditionRows(sandbox([{ type: "CommandExited", status: "True" }]), now), [["CommandExited", "True", "", "-", ""]]);
  });
});
