import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hostnameOf, isRefusal, routeOf, type RoutingHeaders } from "./sandbox-route.js";

const ID = "k3x9q0m2zt7c1w8r5bn4";

function route(headers: RoutingHeaders, domain = "localhost") {
  const result = routeOf(headers, domain);
  return isRefusal(result) ? { refused: result.refused } : result;
}

describe("routeOf", () => {
  it("reads <port>-<sandboxID> from the left-most label of a Host under the domain, with or without the proxy's port", () => {
    assert.deepEqual(route({ host: `8080-${ID}.localhost:7072` }), { sandboxId: ID, port: 8080, by: "host" });
    assert.deepEqual(route({ host: `1-${ID}.localhost` }), { sandboxId: ID, port: 1, by: "host" });
    assert.deepEqual(route({ host: `65535-${ID}.sandboxes.example.com` }, "sandboxes.example.com"), { sandboxId: ID, port: 65535, by: "host" });
    // Host names are case-insensitive; a fully qualified name may end in a dot.
    assert.deepEqual(route({ host: `8080-${ID.toUpperCase()}.LocalHost.:7072` }), { sandboxId: ID, port: 8080, by: "host" });
  });

  it("reads HTTP/2's :authority like a Host", () => {
    assert.deepEqual(route({ ":authority": `443-${ID}.localhost:7072` }), { sandboxId: ID, port: 443, by: "host" });
  });

  it("uses the E2B headers when the Host is the proxy's own name: the domain, localhost, an IP address", () => {
    for (const host of ["localhost:7072", "127.0.0.1:7072", "[::1]:7072", "sandboxes.example.com", "fast-sandbox-proxy.fast-sandbox-system.svc"]) {
      assert.deepEqual(
        route({ host, "e2b-sandbox-id": ID, "e2b-sandbox-port": "49983" }, host.startsWith("sandboxes") ? "sandboxes.example.com" : "localhost"),
        { sandboxId: ID, port: 49983, by: "headers" },
        host,
      );
    }
  });

  it("prefers the Host label to the headers when both name a sandbox", () => {
    assert.deepEqual(route({ host: `8080-${ID}.localhost`, "e2b-sandbox-id": "other", "e2b-sandbox-port": "1" }), { sandboxId: ID, port: 8080, by: "host" });
  });

  it("refuses ports outside 1..65535 and ports with leading zeros", () => {
    for (const port of ["0", "65536", "99999", "08080", "-1", "80a", ""]) {
      assert.ok("refused" in route({ host: `${port}-${ID}.localhost` }), `host port ${port}`);
      assert.ok("refused" in route({ host: "localhost", "e2b-sandbox-id": ID, "e2b-sandbox-port": port }), `header port ${port}`);
    }
  });

  it("refuses sandbox ids that are not DNS labels of lower-case letters and digits (old dotted ids included)", () => {
    for (const id of ["default.web.a1b2c3", "a_b", "a-b", "", "x".repeat(64), "ünï"]) {
      assert.ok("refused" in route({ host: "localhost", "e2b-sandbox-id": id, "e2b-sandbox-port": "80" }), id);
    }
    assert.ok("refused" in route({ host: `8080-${"x".repeat(64)}.localhost` }));
    assert.ok("refused" in route({ host: `8080-a_b.localhost` }));
  });

  it("says how to name a sandbox when nothing does", () => {
    const refusal = route({ host: "localhost:7072" });
    assert.ok("refused" in refusal);
    assert.match(refusal.refused, /<port>-<sandboxID>\.localhost or the headers E2b-Sandbox-Id and E2b-Sandbox-Port/);
    assert.ok("refused" in route({}));
    assert.match((route({ host: "www.localhost" }) as { refused: string }).refused, /is not <port>-<sandboxID>\.localhost/);
  });

  it("does not route a Host under another domain by its label", () => {
    assert.ok("refused" in route({ host: `8080-${ID}.example.com` }));
    assert.ok("refused" in route({ host: `8080-${ID}.localhost.example.com` }));
    assert.ok("refused" in route({ host: `8080-${ID}.evil-localhost` }));
  });

  it("needs both E2B headers", () => {
    assert.match((route({ host: "localhost", "e2b-sandbox-id": ID }) as { refused: string }).refused, /E2b-Sandbox-Port/);
    assert.match((route({ host: "localhost", "e2b-sandbox-port": "80" }) as { refused: string }).refused, /E2b-Sandbox-Id/);
  });

  // Randomized: every Host built from a valid port and id routes to exactly them; a mutated one never routes to a wrong target.
  it("round-trips generated routes and never misroutes mutated ones", () => {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    const noise = "-._:ABCxyz09 ";
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      const port = 1 + random(65535);
      const id = Array.from({ length: 1 + random(30) }, () => alphabet[random(alphabet.length)]).join("");
      const host = `${port}-${id}.localhost:${random(2) === 0 ? "7072" : "80"}`;
      assert.deepEqual(route({ host }), { sandboxId: id, port, by: "host" });
      const at = random(host.length);
      const mutated = host.slice(0, at) + (noise[random(noise.length)] ?? "") + host.slice(at + 1);
      const result = route({ host: mutated });
      if ("sandboxId" in result) {
        // Whatever it routes to must be spelled out by the mutated Host itself.
        assert.ok(mutated.trim().toLowerCase().startsWith(`${result.port}-${result.sandboxId}.`), `${mutated} → ${JSON.stringify(result)}`);
        assert.match(result.sandboxId, /^[a-z0-9]{1,63}$/);
      }
    }
  });
});

describe("hostnameOf", () => {
  it("drops the port and an IPv6 literal's brackets", () => {
    assert.equal(hostnameOf("Example.COM:8080"), "example.com");
    assert.equal(hostnameOf("[::1]:7072"), "::1");
    assert.equal(hostnameOf("localhost"), "localhost");
  });
});
