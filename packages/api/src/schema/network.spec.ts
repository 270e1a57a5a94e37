import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import {
  DEFAULT_NETWORK_MODE,
  checkEgressOverride,
  checkPoolNetwork,
  describeEgressPolicy,
  egressPolicyOf,
  networkModeOf,
  type EgressPolicy,
  type PoolNetwork,
} from "./network.js";

/** Runs `check` and returns the ValidationError it must throw. */
function refusal(check: () => void): ValidationError {
  try {
    check();
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a ValidationError");
}

const allowAll: EgressPolicy = { policy: "allowAll" };
const denyAll: EgressPolicy = { policy: "denyAll" };
const allowList = (...allow: NonNullable<EgressPolicy["allow"]>): EgressPolicy => ({ policy: "allowList", allow });

describe("networkModeOf and egressPolicyOf", () => {
  it("read the pool's own mode and egress", () => {
    assert.equal(networkModeOf({ network: { mode: "Isolated" } }), "Isolated");
    assert.equal(networkModeOf({ network: { mode: "Shared" } }), "Shared");
    assert.deepEqual(egressPolicyOf({ network: { mode: "Isolated", egress: denyAll } }), denyAll);
  });

  it("fall back to DEFAULT_NETWORK_MODE and allowAll", () => {
    assert.equal(networkModeOf({}), DEFAULT_NETWORK_MODE);
    assert.equal(networkModeOf({ network: {} }), DEFAULT_NETWORK_MODE);
    assert.deepEqual(egressPolicyOf({}), allowAll);
    assert.deepEqual(egressPolicyOf({ network: { mode: "Isolated" } }), allowAll);
  });
});

describe("checkPoolNetwork", () => {
  const check = (network: PoolNetwork) => () => checkPoolNetwork({ network });

  it("accepts egress and sandbox-to-sandbox traffic on an Isolated network, and a bare Shared one", () => {
    assert.doesNotThrow(check({ mode: "Isolated", egress: allowList({ cidr: "10.0.0.0/8" }), allowSandboxToSandbox: true }));
    assert.doesNotThrow(check({ mode: "Shared" }));
    assert.doesNotThrow(check({ mode: "Shared", allowSandboxToSandbox: false }));
    assert.doesNotThrow(() => checkPoolNetwork({}));
  });

  it("refuses an egress policy or sandbox-to-sandbox traffic on a Shared network, saying why and what to do", () => {
    const egress = refusal(check({ mode: "Shared", egress: denyAll }));
    assert.equal(egress.field, "spec.network.egress");
    assert.match(egress.message, /applies to an Isolated network only, and this pool's is Shared: .*egress cannot be restricted; set network\.mode: Isolated/);
    const peers = refusal(check({ mode: "Shared", allowSandboxToSandbox: true }));
    assert.equal(peers.field, "spec.network.allowSandboxToSandbox");
    assert.match(peers.message, /applies to an Isolated network only, and this pool's is Shared/);
  });

  it("judges a pool without a mode by DEFAULT_NETWORK_MODE, and says the mode is the default", () => {
    if (DEFAULT_NETWORK_MODE === "Isolated") {
      assert.doesNotThrow(check({ egress: denyAll }));
    } else {
      assert.match(refusal(check({ egress: denyAll })).message, /this pool's is Shared \(mode unset: the default, Shared\)/);
    }
  });

  it("refuses an allowList without entries, and entries under another policy", () => {
    const empty = refusal(check({ mode: "Isolated", egress: { policy: "allowList" } }));
    assert.equal(empty.field, "spec.network.egress.allow");
    assert.match(empty.message, /policy allowList needs at least one entry in allow \(denyAll allows nothing\)/);
    const stray = refusal(check({ mode: "Isolated", egress: { policy: "denyAll", allow: [{ cidr: "10.0.0.0/8" }] } }));
    assert.equal(stray.field, "spec.network.egress.allow");
    assert.match(stray.message, /is read with policy allowList only, and the policy is denyAll/);
  });
});

describe("checkEgressOverride", () => {
  const pool = "default/p";
  const check = (override: EgressPolicy, poolEgress: EgressPolicy) => () => checkEgressOverride(override, poolEgress, pool);

  it("always allows denyAll", () => {
    for (const poolEgress of [allowAll, denyAll, allowList({ cidr: "10.0.0.0/8" })]) assert.doesNotThrow(check(denyAll, poolEgress));
  });

  it("allows anything under the pool's allowAll", () => {
    assert.doesNotThrow(check(allowAll, allowAll));
    assert.doesNotThrow(check(allowList({ cidr: "0.0.0.0/0" }, { cidr: "::/0", ports: [53], protocol: "udp" }), allowAll));
  });

  it("under the pool's denyAll allows denyAll only", () => {
    for (const override of [allowAll, allowList({ cidr: "10.0.0.0/8" })]) {
      const error = refusal(check(override, denyAll));
      assert.equal(error.field, "spec.egress.policy");
      assert.match(error.message, /allows more than the pool does: the egress policy of pool default\/p is denyAll; allowed here: denyAll$/);
    }
  });

  it("under the pool's allowList refuses allowAll and says what is allowed", () => {
    const error = refusal(check(allowAll, allowList({ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" })));
    assert.equal(error.field, "spec.egress.policy");
    assert.match(
      error.message,
      /allowAll allows more than the pool does: the egress policy of pool default\/p is allowList \(10\.0\.0\.0\/8 tcp port 443\); allowed here: denyAll, or an allowList/,
    );
  });

  it("under the pool's allowList accepts entries that each lie within one of the pool's: network, ports and protocol", () => {
    const poolEgress = allowList(
      { cidr: "10.0.0.0/8", ports: [80, 443], protocol: "tcp" },
      { cidr: "192.168.0.0/16" },
      { cidr: "2001:db8::/32", protocol: "udp" },
    );
    assert.doesNotThrow(
      check(
        allowList(
          { cidr: "10.0.0.0/8", ports: [443, 80], protocol: "tcp" },
          { cidr: "10.1.2.3/32", ports: [443], protocol: "tcp" },
          { cidr: "192.168.1.0/24" },
          { cidr: "192.168.1.0/24", ports: [5432], protocol: "udp" },
          { cidr: "2001:db8:1::/48", ports: [53], protocol: "udp" },
        ),
        poolEgress,
      ),
    );
  });

  it("under the pool's allowList refuses an entry that is wider in network, ports or protocol, naming the entry", () => {
    const poolEgress = allowList({ cidr: "10.1.0.0/16", ports: [443], protocol: "tcp" }, { cidr: "192.168.0.0/24" });
    const wider: [EgressPolicy, RegExp][] = [
      [allowList({ cidr: "192.168.0.0/24" }, { cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }), /10\.0\.0\.0\/8 tcp port 443 is not within/],
      [allowList({ cidr: "192.168.0.0/24" }, { cidr: "10.1.0.0/16", protocol: "tcp" }), /10\.1\.0\.0\/16 tcp any port is not within/],
      [allowList({ cidr: "192.168.0.0/24" }, { cidr: "10.1.0.0/16", ports: [443, 8443], protocol: "tcp" }), /10\.1\.0\.0\/16 tcp ports 443,8443/],
      [allowList({ cidr: "192.168.0.0/24" }, { cidr: "10.1.0.0/16", ports: [443] }), /10\.1\.0\.0\/16 tcp\+udp port 443 is not within/],
      [allowList({ cidr: "192.168.0.0/24" }, { cidr: "2001:db8::/32" }), /2001:db8::\/32 tcp\+udp any port is not within/],
    ];
    for (const [override, entry] of wider) {
      const error = refusal(check(override, poolEgress));
      assert.equal(error.field, "spec.egress.allow[1]");
      assert.match(error.message, entry);
      assert.match(
        error.message,
        /the egress policy of pool default\/p is allowList \(10\.1\.0\.0\/16 tcp port 443; 192\.168\.0\.0\/24 tcp\+udp any port\); narrow this entry .* or use denyAll$/,
      );
    }
  });

  it("does not join the pool's entries: an entry must lie within a single one", () => {
    const error = refusal(check(allowList({ cidr: "10.0.0.0/24" }), allowList({ cidr: "10.0.0.0/25" }, { cidr: "10.0.0.128/25" })));
    assert.equal(error.field, "spec.egress.allow[0]");
  });
});

describe("describeEgressPolicy", () => {
  it("names the policy and lists an allowList's entries", () => {
    assert.equal(describeEgressPolicy(allowAll), "allowAll");
    assert.equal(
      describeEgressPolicy(allowList({ cidr: "10.0.0.0/8", ports: [53], protocol: "udp" }, { cidr: "::/0" })),
      "allowList (10.0.0.0/8 udp port 53; ::/0 tcp+udp any port)",
    );
  });
});
