import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { endpointUrl, parseProxyBaseUrl, proxyBaseUrl } from "./sandbox-endpoints.js";
import { isRefusal, routeOf } from "./sandbox-route.js";

const ID = "k3x9q0m2zt7c1w8r5bn4";

describe("sandbox endpoints", () => {
  it("are http://<port>-<sandboxID>.localhost:<proxy port>/ for the embedded default", () => {
    assert.equal(endpointUrl(parseProxyBaseUrl("http://localhost:7072"), ID, 8080), `http://8080-${ID}.localhost:7072/`);
  });

  it("follow the scheme and domain of a public base URL, without the scheme's default port", () => {
    assert.equal(endpointUrl(parseProxyBaseUrl("https://sandboxes.example.com"), ID, 3000), `https://3000-${ID}.sandboxes.example.com/`);
    assert.equal(endpointUrl(parseProxyBaseUrl("http://sandboxes.example.com:80/"), ID, 3000), `http://3000-${ID}.sandboxes.example.com/`);
  });

  it("give back the base URL they were parsed from, without a default port or a trailing slash", () => {
    assert.equal(proxyBaseUrl(parseProxyBaseUrl("http://localhost:7072")), "http://localhost:7072");
    assert.equal(proxyBaseUrl(parseProxyBaseUrl("https://sandboxes.example.com:443/")), "https://sandboxes.example.com");
  });

  it("route back to the sandbox and port they were made for", () => {
    for (const base of ["http://localhost:7072", "https://sandboxes.example.com"]) {
      const address = parseProxyBaseUrl(base);
      const url = new URL(endpointUrl(address, ID, 8080));
      const route = routeOf({ host: url.host }, address.domain);
      assert.ok(!isRefusal(route));
      assert.deepEqual(route, { sandboxId: ID, port: 8080, by: "host" });
    }
  });

  it("refuse base URLs sandboxes cannot be named under, saying why", () => {
    for (const [base, why] of [
      ["localhost:7072", /http:\/\/ or https:\/\//],
      ["not a url", /not a URL/],
      ["ftp://localhost", /http:\/\/ or https:\/\//],
      ["http://localhost:7072/sandboxes", /not by path/],
      ["http://127.0.0.1:7072", /IP address/],
      ["http://[::1]:7072", /IP address/],
    ] as const) {
      assert.throws(
        () => parseProxyBaseUrl(base, "--proxy-url"),
        (error: unknown) => error instanceof ValidationError && error.field === "--proxy-url" && why.test(error.message),
        base,
      );
    }
  });
});
