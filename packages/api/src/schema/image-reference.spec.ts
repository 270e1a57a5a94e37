import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { normalizeImageName, normalizeRegistryHost, parseImageReference } from "./image-reference.js";

const DIGEST = `sha256:${"a".repeat(64)}`;

describe("parseImageReference", () => {
  it("puts short names on Docker Hub under library/ with the latest tag", () => {
    assert.deepEqual(parseImageReference("busybox"), {
      domain: "docker.io",
      path: "library/busybox",
      tag: "latest",
      name: "docker.io/library/busybox:latest",
    });
    assert.equal(parseImageReference("python:3.12").name, "docker.io/library/python:3.12");
    assert.equal(parseImageReference("bitnami/redis").name, "docker.io/bitnami/redis:latest");
    assert.equal(parseImageReference("docker.io/library/busybox:1.36").name, "docker.io/library/busybox:1.36");
    assert.equal(parseImageReference("index.docker.io/library/busybox").name, "docker.io/library/busybox:latest");
    assert.equal(parseImageReference("docker.io/busybox").name, "docker.io/library/busybox:latest");
  });

  it("reads a registry domain from a first component with a dot, a port or localhost", () => {
    assert.deepEqual(parseImageReference("127.0.0.1:5000/team/app:v1"), {
      domain: "127.0.0.1:5000",
      path: "team/app",
      tag: "v1",
      name: "127.0.0.1:5000/team/app:v1",
    });
    assert.equal(parseImageReference("localhost/app").name, "localhost/app:latest");
    assert.equal(parseImageReference("localhost:5000/app").domain, "localhost:5000");
    assert.equal(parseImageReference("ghcr.io/org/sub/app").name, "ghcr.io/org/sub/app:latest");
    assert.equal(parseImageReference("[::1]:5000/app:v2").domain, "[::1]:5000");
    assert.equal(parseImageReference("fast-sandbox.io/base:latest").name, "fast-sandbox.io/base:latest");
  });

  it("keeps a digest, with or without a tag, and adds no latest tag to it", () => {
    assert.deepEqual(parseImageReference(`ghcr.io/org/app@${DIGEST}`), {
      domain: "ghcr.io",
      path: "org/app",
      digest: DIGEST,
      name: `ghcr.io/org/app@${DIGEST}`,
    });
    const both = parseImageReference(`busybox:1.36@${DIGEST}`);
    assert.equal(both.tag, "1.36");
    assert.equal(both.digest, DIGEST);
    assert.equal(both.name, `docker.io/library/busybox:1.36@${DIGEST}`);
  });

  it("refuses malformed references with a message naming the problem", () => {
    const cases: [string, RegExp][] = [
      ["", /it is empty/],
      [" busybox", /spaces/],
      ["Busybox", /must be lower-case/],
      ["busybox@sha256:abc", /digest must be sha256:<64 hex digits>/],
      ["busybox@md5:" + "a".repeat(32), /digest must be/],
      ["busybox:bad/tag", /registry port "bad"/],
      ["busybox:-x", /the tag "-x"/],
      ["a//b", /empty path component/],
      ["example.com:99999/app", /port "99999"/],
      ["exa_mple.com/app", /registry "exa_mple.com"/],
      ["app/-lead", /^image: "app\/-lead" is not a valid image reference: the repository path component "-lead"/],
      [`r.io/${"a".repeat(260)}`, /longer than 255/],
    ];
    for (const [reference, message] of cases) {
      assert.throws(
        () => parseImageReference(reference),
        (error: unknown) => {
          assert.ok(error instanceof ValidationError, `${reference}: ${String(error)}`);
          assert.equal(error.field, "image");
          assert.match(error.message, message, reference);
          return true;
        },
      );
    }
  });

  it("names the field it was given", () => {
    assert.throws(() => parseImageReference("UPPER", "spec.prewarmImages[0]"), /^ValidationError: spec\.prewarmImages\[0\]: /);
  });
});

describe("normalizeImageName", () => {
  it("normalizes what parses and leaves anything else as it is", () => {
    assert.equal(normalizeImageName("busybox"), "docker.io/library/busybox:latest");
    assert.equal(normalizeImageName("Not A Reference"), "Not A Reference");
  });
});

describe("normalizeRegistryHost", () => {
  it("names Docker Hub docker.io whichever of its names or URLs is given", () => {
    for (const text of ["docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io", "Registry.Hub.Docker.com"]) {
      assert.equal(normalizeRegistryHost(text), "docker.io", text);
    }
  });

  it("drops a scheme and a path and keeps the port", () => {
    assert.equal(normalizeRegistryHost("http://127.0.0.1:5000/"), "127.0.0.1:5000");
    assert.equal(normalizeRegistryHost(" ghcr.io "), "ghcr.io");
    assert.equal(normalizeRegistryHost("https://registry.example.com:8443/v2/"), "registry.example.com:8443");
  });
});
