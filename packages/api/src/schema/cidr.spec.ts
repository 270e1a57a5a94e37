import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { cidrContains, cidrProblem, parseCidr } from "./cidr.js";

describe("parseCidr", () => {
  it("accepts IPv4 and IPv6 networks, single addresses and the whole space", () => {
    for (const cidr of ["10.0.0.0/8", "203.0.113.7/32", "0.0.0.0/0", "2001:db8::/32", "2001:db8::1/128", "::/0", "::ffff:192.0.2.0/120", "fe80::/10"]) {
      assert.equal(cidrProblem(cidr), undefined, cidr);
    }
    assert.deepEqual(parseCidr("10.0.0.0/8"), { family: 4, network: 0x0a000000n, prefixLength: 8 });
    assert.deepEqual(parseCidr("2001:db8::/32"), { family: 6, network: 0x20010db8n << 96n, prefixLength: 32 });
    assert.equal(parseCidr("::ffff:192.0.2.0/120").network, (0xffffn << 32n) | 0xc0000200n);
  });

  it("refuses a value without a prefix length and shows how to write the address alone", () => {
    assert.equal(cidrProblem("203.0.113.7"), "it has no /prefix length; the address alone is 203.0.113.7/32");
    assert.equal(cidrProblem("2001:db8::1"), "it has no /prefix length; the address alone is 2001:db8::1/128");
    assert.equal(cidrProblem("example.com"), "it has no /prefix length");
  });

  it("refuses what is not an address", () => {
    for (const address of ["10.0.0/8", "256.0.0.0/8", "010.0.0.0/8", "example.com/8", "2001:db8:::/32", "fe80::1%eth0/64", "/8"]) {
      assert.match(cidrProblem(address) ?? "", /is not an IPv4 or IPv6 address/, address);
    }
  });

  it("refuses prefix lengths beyond the family's bits, and ones that are not plain numbers", () => {
    assert.match(cidrProblem("10.0.0.0/33") ?? "", /prefix length must be a number from 0 to 32 for IPv4/);
    assert.match(cidrProblem("2001:db8::/129") ?? "", /from 0 to 128 for IPv6/);
    for (const prefix of ["", "08", "-1", "8.0", " 8"]) assert.match(cidrProblem(`10.0.0.0/${prefix}`) ?? "", /prefix length/, prefix);
  });

  it("refuses bits set after the prefix and names the network meant", () => {
    assert.match(cidrProblem("10.0.0.1/8") ?? "", /bits are set after the \/8 prefix; the network is 10\.0\.0\.0\/8$/);
    assert.match(cidrProblem("2001:db8::1/32") ?? "", /the network is 2001:db8::\/32$/);
    assert.match(cidrProblem("2001:db8:0:0:1:0:0:1/64") ?? "", /the network is 2001:db8::\/64$/);
    assert.match(cidrProblem("1:0:0:2:0:0:0:3/112") ?? "", /the network is 1:0:0:2::\/112$/);
  });

  it("throws a ValidationError on the given field with examples", () => {
    assert.throws(
      () => parseCidr("10.0.0.1/8", "spec.egress.allow[0].cidr"),
      (error: unknown) =>
        error instanceof ValidationError &&
        error.field === "spec.egress.allow[0].cidr" &&
        /"10\.0\.0\.1\/8" is not a valid CIDR: .*\(e\.g\. 10\.0\.0\.0\/8, 203\.0\.113\.7\/32 or 2001:db8::\/32\)$/.test(error.message),
    );
  });
});

describe("cidrContains", () => {
  const contains = (outer: string, inner: string) => cidrContains(parseCidr(outer), parseCidr(inner));

  it("holds for the same network and for longer prefixes inside it", () => {
    assert.equal(contains("10.0.0.0/8", "10.0.0.0/8"), true);
    assert.equal(contains("10.0.0.0/8", "10.1.2.0/24"), true);
    assert.equal(contains("10.0.0.0/8", "10.255.255.255/32"), true);
    assert.equal(contains("0.0.0.0/0", "203.0.113.7/32"), true);
    assert.equal(contains("2001:db8::/32", "2001:db8:ffff::/48"), true);
    assert.equal(contains("::/0", "2001:db8::1/128"), true);
  });

  it("fails for wider networks, neighbours and the other family", () => {
    assert.equal(contains("10.1.0.0/16", "10.0.0.0/8"), false);
    assert.equal(contains("10.0.0.0/8", "11.0.0.0/8"), false);
    assert.equal(contains("10.0.0.0/25", "10.0.0.128/25"), false);
    assert.equal(contains("0.0.0.0/0", "::/0"), false);
    assert.equal(contains("::/0", "10.0.0.0/8"), false);
    assert.equal(contains("2001:db8::/32", "2001:db9::/32"), false);
  });
});
