import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { writeRunscOwnNetnsWrapper, writeRunscWrapper } from "./gvisor-binary.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-gvisor-binary-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in for runsc that reports its arguments and whether the host's net.core sysctls are visible to it. */
const fakeRunsc = join(dir, "fake runsc");
writeFileSync(
  fakeRunsc,
  '#!/bin/sh\necho "args:$*"\nif [ -e /proc/sys/net/core/rmem_default ]; then echo "net sysctls: visible"; else echo "net sysctls: hidden"; fi\n',
);
chmodSync(fakeRunsc, 0o755);

describe("runsc wrappers", () => {
  it("runsc-network-none adds --network=none, the memory root overlay, host FIFOs and the spec's seccomp profile and passes every argument on", () => {
    const path = writeRunscWrapper(dir, fakeRunsc);
    assert.equal(path, join(dir, "runsc-network-none"));
    assert.equal(statSync(path).mode & 0o777, 0o755);
    assert.equal(
      execFileSync(path, ["create", "--bundle", "/b b", "id"], { encoding: "utf8" }).split("\n")[0],
      "args:--network=none --overlay2=root:memory --host-fifo=open --oci-seccomp create --bundle /b b id",
    );
  });

  it("runsc-own-netns runs runsc with /proc/sys/net hidden, in a mount namespace of its own only, with the memory root overlay and host FIFOs", () => {
    const path = writeRunscOwnNetnsWrapper(dir, fakeRunsc);
    assert.equal(path, join(dir, "runsc-own-netns"));
    assert.equal(
      execFileSync(path, ["start", "id 1"], { encoding: "utf8" }),
      "args:--overlay2=root:memory --host-fifo=open --oci-seccomp start id 1\nnet sysctls: hidden\n",
    );
    // The host's view is untouched.
    assert.ok(existsSync("/proc/sys/net/core/rmem_default"));
  });

  it("rewrites a wrapper only when it changed, and never leaves a temporary file", () => {
    const path = writeRunscWrapper(dir, fakeRunsc);
    const before = statSync(path).mtimeMs;
    writeRunscWrapper(dir, fakeRunsc);
    assert.equal(statSync(path).mtimeMs, before);
    writeRunscWrapper(dir, "/opt/runsc");
    assert.match(readFileSync(path, "utf8"), /exec '\/opt\/runsc' --network=none --overlay2=root:memory --host-fifo=open --oci-seccomp "\$@"/);
    assert.ok(!execFileSync("ls", [dir], { encoding: "utf8" }).includes(".tmp"));
  });
});
