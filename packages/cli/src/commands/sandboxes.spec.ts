import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import {
  MAX_EXPIRE,
  checkSandboxName,
  checkWorkdir,
  commandNotStarted,
  parseEgress,
  parseEnvs,
  parseExpireMs,
  parsePorts,
  parseRecoveryTimeoutSeconds,
} from "./sandboxes.js";

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

describe("parsePorts: duplicates", () => {
  it("refuses a port given twice as a --port error, as the control plane would", () => {
    assertUsageError(() => parsePorts(["8080", "9090", "8080"]), "--port", /^--port: 8080 is given twice; give each port once$/);
  });
});

describe("parseExpireMs and parseRecoveryTimeoutSeconds", () => {
  it("read durations up to their bounds", () => {
    assert.equal(parseExpireMs("30s"), 30_000);
    assert.equal(parseExpireMs(MAX_EXPIRE), 36_500 * 86_400_000);
    assert.equal(parseRecoveryTimeoutSeconds("24h"), 86_400);
    assert.equal(parseRecoveryTimeoutSeconds("1s"), 1);
  });

  it("refuse a duration past them (or too large for a number) with the allowed range", () => {
    for (const value of ["36501d", "999999999h", "100000000000000000000s", `${"9".repeat(400)}s`]) {
      assertUsageError(() => parseExpireMs(value), "--expire", /is too long; allowed: 1s to 36500d \(100 years\)$/);
    }
    // Shorter than a second: the end (now + it) could pass before the control plane reads it, refused or not by chance.
    for (const value of ["1ms", "5ms", "999ms"]) {
      assertUsageError(() => parseExpireMs(value), "--expire", /is too short: the sandbox would end before it could be used; allowed: 1s to 36500d$/);
    }
    assert.equal(parseExpireMs("1s"), 1000);
    assertUsageError(
      () => parseRecoveryTimeoutSeconds("86401s"),
      "--recovery-timeout",
      /^--recovery-timeout: "86401s" is too long; allowed: 1s to 24h \(86400s\)$/,
    );
  });
});

describe("checkSandboxName", () => {
  it("takes a DNS-1123 label of at most 63 characters, or none, and refuses anything else as a --name error", () => {
    for (const name of [undefined, "", "web", "a", "web-1", "a".repeat(63)]) checkSandboxName(name);
    for (const name of ["Web", "web_1", "-web", "web-", "a".repeat(64), "wéb"]) {
      assertUsageError(
        () => checkSandboxName(name),
        "--name",
        /is not a sandbox name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit$/,
      );
    }
  });
});

describe("checkWorkdir", () => {
  it("takes an absolute path or none, and refuses a relative one as a --workdir error", () => {
    assert.equal(checkWorkdir("/srv"), "/srv");
    assert.equal(checkWorkdir(undefined), undefined);
    for (const value of ["srv", "./srv", "~/x"]) assertUsageError(() => checkWorkdir(value), "--workdir", /is not an absolute path; give one starting with \//);
  });
});

describe("commandNotStarted", () => {
  const runc = (detail: string) =>
    new Error(
      `containerd containerd.services.tasks.v1.Tasks/Start: OCI runtime exec failed: exec failed: unable to start container process: ${detail}: unknown`,
    );

  it("reads runc's refusal to start an exec'd command as docker exec does: 127 not there, 126 cannot be run", () => {
    assert.deepEqual(commandNotStarted(runc('exec: "nosuch": executable file not found in $PATH')), {
      message: 'exec: "nosuch": executable file not found in $PATH',
      exitCode: 127,
    });
    assert.deepEqual(commandNotStarted(runc('exec: "/no/x": stat /no/x: no such file or directory')), {
      message: 'exec: "/no/x": stat /no/x: no such file or directory',
      exitCode: 127,
    });
    assert.deepEqual(commandNotStarted(runc('exec: "/etc": permission denied')), { message: 'exec: "/etc": permission denied', exitCode: 126 });
  });

  it("reads runc's refusal to enter the working directory as a command that cannot be run (126), naming the directory", () => {
    assert.deepEqual(commandNotStarted(runc('chdir to cwd ("/nonexist") set in config.json failed: no such file or directory')), {
      message: 'exec: working directory "/nonexist": no such file or directory',
      exitCode: 126,
    });
    assert.deepEqual(commandNotStarted(runc('chdir to cwd ("/etc/passwd") set in config.json failed: not a directory')), {
      message: 'exec: working directory "/etc/passwd": not a directory',
      exitCode: 126,
    });
  });

  it("leaves any other failure alone (a sandbox not found, a message that is no runtime's)", () => {
    assert.equal(commandNotStarted(new Error("sandbox default/web not found")), undefined);
    assert.equal(commandNotStarted('exec: "x": executable file not found'), undefined);
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

describe("parseEgress: what the control plane would refuse", () => {
  it("refuses a CIDR that is not one, and ports out of range, as --egress errors", () => {
    assertUsageError(
      () => parseEgress(["10.0.0.0/33"]),
      "--egress",
      /^--egress: "10\.0\.0\.0\/33" is not a valid CIDR: the prefix length must be a number from 0 to 32/,
    );
    assertUsageError(() => parseEgress(["10.0.0.1/8"]), "--egress", /is not a valid CIDR: bits are set after the \/8 prefix/);
    for (const [value, port] of [
      ["10.0.0.0/8:0", 0],
      ["10.0.0.0/8:443,70000/tcp", 70000],
    ] as const) {
      assertUsageError(() => parseEgress([value]), "--egress", new RegExp(`^--egress: port ${port} of .* is out of range; allowed: 1\\.\\.65535$`));
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
