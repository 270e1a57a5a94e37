import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { controllerConfigFromEnv, parseListen } from "./controller-config.js";

/** The least a replica needs: its identity (Downward API) and both tokens. */
function minimalEnv(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    FSB_POD_NAME: "controller-0",
    FSB_POD_NAMESPACE: "fast-sandbox-system",
    FSB_TOKEN: "api-token",
    FSB_AGENT_TOKEN: "agent-token",
    ...overrides,
  };
}

/** Asserts a ValidationError of `field` whose message matches. */
function assertInvalid(env: NodeJS.ProcessEnv, field: string, message: RegExp): void {
  assert.throws(
    () => controllerConfigFromEnv(env),
    (error: unknown) => {
      assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
      assert.equal(error.field, field);
      assert.equal(error.code, "invalid_argument");
      assert.match(error.message, message);
      return true;
    },
  );
}

describe("controllerConfigFromEnv", () => {
  let dir: string;
  const file = (name: string, content: string): string => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fsb-controller-config-"));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("uses the defaults for everything optional", () => {
    assert.deepEqual(controllerConfigFromEnv(minimalEnv()), {
      host: "0.0.0.0",
      port: 7070,
      identity: "controller-0",
      namespace: "fast-sandbox-system",
      leaseName: "fast-sandbox-controller",
      leaseDurationSeconds: 15,
      token: "api-token",
      kubernetesUsers: true,
      agentToken: "agent-token",
      agentTokenForOldPods: false,
      agentPod: {},
      agentTemplatePolicy: { mode: "restricted", allowedImages: [] },
      heartbeatIntervalMs: 2000,
      proxyAddress: { protocol: "http:", domain: "localhost", portSuffix: ":7072" },
      e2b: { host: "0.0.0.0", port: 7073, apiUrl: "http://localhost:7073", sandboxUrl: "http://localhost:7072", sandboxNamespace: "default" },
    });
  });

  it("takes every setting from its variable", () => {
    const config = controllerConfigFromEnv(
      minimalEnv({
        FSB_LISTEN: "127.0.0.1:8080",
        FSB_LEADER_ELECTION_LEASE: "my-lease",
        FSB_LEASE_DURATION_SECONDS: "30",
        FSB_HEARTBEAT_INTERVAL_MS: "500",
        FSB_AGENT_IMAGE: "registry.example/fsb/agent:v3",
        FSB_AGENT_CONTAINERD_NAMESPACE: "fsb",
        FSB_PROXY_BASE_URL: "https://sandboxes.example.com",
      }),
    );
    assert.deepEqual(config.proxyAddress, { protocol: "https:", domain: "sandboxes.example.com", portSuffix: "" });
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.port, 8080);
    assert.equal(config.leaseName, "my-lease");
    assert.equal(config.leaseDurationSeconds, 30);
    assert.equal(config.heartbeatIntervalMs, 500);
    assert.deepEqual(config.agentPod, { image: "registry.example/fsb/agent:v3", containerdNamespace: "fsb" });
  });

  it("takes Kubernetes users' own tokens unless FSB_KUBERNETES_USERS is off, and refuses anything but on or off", () => {
    assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_KUBERNETES_USERS: "off" })).kubernetesUsers, false);
    assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_KUBERNETES_USERS: "false" })).kubernetesUsers, false);
    assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_KUBERNETES_USERS: "on" })).kubernetesUsers, true);
    assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_KUBERNETES_USERS: "" })).kubernetesUsers, true);
    assert.throws(() => controllerConfigFromEnv(minimalEnv({ FSB_KUBERNETES_USERS: "no" })), /FSB_KUBERNETES_USERS.*"no" is neither on nor off/);
  });

  it("treats empty variables as unset", () => {
    const config = controllerConfigFromEnv(
      minimalEnv({ FSB_LISTEN: "", FSB_LEADER_ELECTION_LEASE: "", FSB_LEASE_DURATION_SECONDS: "", FSB_AGENT_IMAGE: "", FSB_AGENT_TEMPLATE_FILE: "" }),
    );
    assert.equal(config.port, 7070);
    assert.equal(config.leaseName, "fast-sandbox-controller");
    assert.equal(config.leaseDurationSeconds, 15);
    assert.deepEqual(config.agentPod, {});
  });

  describe("the E2B-compatible API", () => {
    it("takes its listen address and public URLs; E2B_SANDBOX_URL follows the proxy's base URL unless given", () => {
      assert.deepEqual(
        controllerConfigFromEnv(
          minimalEnv({
            FSB_E2B_LISTEN: "127.0.0.1:9073",
            FSB_E2B_API_URL: "https://e2b.example.com/",
            FSB_PROXY_BASE_URL: "https://sandboxes.example.com",
            FSB_E2B_NAMESPACE: "agents",
          }),
        ).e2b,
        { host: "127.0.0.1", port: 9073, apiUrl: "https://e2b.example.com", sandboxUrl: "https://sandboxes.example.com", sandboxNamespace: "agents" },
      );
      assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_E2B_SANDBOX_URL: "http://proxy.internal:7072" })).e2b?.sandboxUrl, "http://proxy.internal:7072");
    });

    it("is off with FSB_E2B_LISTEN=off", () => {
      assert.equal(controllerConfigFromEnv(minimalEnv({ FSB_E2B_LISTEN: "off" })).e2b, undefined);
    });

    it("names the variable that is wrong and what it may be", () => {
      assertInvalid(minimalEnv({ FSB_E2B_LISTEN: "7073" }), "FSB_E2B_LISTEN", /"7073" is not host:port \(e\.g\. 0\.0\.0\.0:7073\) or off/);
      assertInvalid(minimalEnv({ FSB_E2B_API_URL: "e2b.example.com" }), "FSB_E2B_API_URL", /is not a URL; e\.g\. http:\/\/localhost:7073/);
      assertInvalid(minimalEnv({ FSB_E2B_API_URL: "https://e2b.example.com/api" }), "FSB_E2B_API_URL", /a host and optionally a port, nothing else/);
      assertInvalid(minimalEnv({ FSB_E2B_SANDBOX_URL: "ftp://proxy" }), "FSB_E2B_SANDBOX_URL", /must be an http:\/\/ or https:\/\//);
      assertInvalid(minimalEnv({ FSB_E2B_NAMESPACE: "Team_A" }), "FSB_E2B_NAMESPACE", /"Team_A" is not a namespace name/);
    });
  });

  describe("the agent template policy", () => {
    it("takes FSB_AGENT_TEMPLATE_POLICY and the images FSB_AGENT_TEMPLATE_IMAGES lists (trimmed, empty entries left out)", () => {
      assert.deepEqual(controllerConfigFromEnv(minimalEnv({ FSB_AGENT_TEMPLATE_POLICY: "unrestricted" })).agentTemplatePolicy, {
        mode: "unrestricted",
        allowedImages: [],
      });
      assert.deepEqual(
        controllerConfigFromEnv(
          minimalEnv({ FSB_AGENT_TEMPLATE_POLICY: "restricted", FSB_AGENT_TEMPLATE_IMAGES: " mirror.example/fsb/agent:0.1.0, fast-sandbox.io/agent:e2e ,," }),
        ).agentTemplatePolicy,
        { mode: "restricted", allowedImages: ["mirror.example/fsb/agent:0.1.0", "fast-sandbox.io/agent:e2e"] },
      );
      assert.deepEqual(controllerConfigFromEnv(minimalEnv({ FSB_AGENT_TEMPLATE_POLICY: "", FSB_AGENT_TEMPLATE_IMAGES: "" })).agentTemplatePolicy, {
        mode: "restricted",
        allowedImages: [],
      });
    });

    it("refuses another policy, naming both it may be", () => {
      for (const value of ["Restricted", "none", "open"]) {
        assertInvalid(
          minimalEnv({ FSB_AGENT_TEMPLATE_POLICY: value }),
          "FSB_AGENT_TEMPLATE_POLICY",
          new RegExp(`^FSB_AGENT_TEMPLATE_POLICY: "${value}" is not a policy: restricted \\(the default: .*\\) or unrestricted \\(anything: .*\\)$`),
        );
      }
    });

    it("refuses an allowed image that is not an image reference, naming it", () => {
      assertInvalid(
        minimalEnv({ FSB_AGENT_TEMPLATE_IMAGES: "mirror.example/Agent:1" }),
        "FSB_AGENT_TEMPLATE_IMAGES",
        /"mirror\.example\/Agent:1" is not a valid image reference/,
      );
    });
  });

  describe("the namespaces whose pools get agents (FSB_POOL_NAMESPACES)", () => {
    const listing = (namespaces: string, extra: NodeJS.ProcessEnv = {}) =>
      controllerConfigFromEnv(minimalEnv({ FSB_POOL_NAMESPACES: namespaces, FSB_E2B_LISTEN: "off", ...extra })).poolNamespaces;

    it("are every namespace when unset or empty", () => {
      assert.equal(controllerConfigFromEnv(minimalEnv()).poolNamespaces, undefined);
      assert.equal(listing(""), undefined);
      assert.equal(listing(" , "), undefined);
    });

    it("are the names it lists, trimmed, each once", () => {
      assert.deepEqual(listing("sandboxes, ci ,sandboxes,"), ["sandboxes", "ci"]);
    });

    it("refuses a name that is not a namespace's (a DNS label), naming it and the variable", () => {
      for (const name of ["Team-A", "team_a", "-team", "a.b", "x".repeat(64)]) {
        assertInvalid(
          minimalEnv({ FSB_POOL_NAMESPACES: `sandboxes,${name}` }),
          "FSB_POOL_NAMESPACES",
          new RegExp(`^FSB_POOL_NAMESPACES: "${name.replace(".", "\\.")}" is not a namespace name \\(lower-case letters`),
        );
      }
    });

    it("must hold the E2B API's namespace while that API is served", () => {
      assertInvalid(
        minimalEnv({ FSB_POOL_NAMESPACES: "sandboxes" }),
        "FSB_POOL_NAMESPACES",
        /^FSB_POOL_NAMESPACES: lists sandboxes but not default, the namespace of the E2B API's templates and sandboxes \(FSB_E2B_NAMESPACE\): add it, set FSB_E2B_NAMESPACE to one of them, or set FSB_E2B_LISTEN=off$/,
      );
      assert.deepEqual(controllerConfigFromEnv(minimalEnv({ FSB_POOL_NAMESPACES: "sandboxes", FSB_E2B_NAMESPACE: "sandboxes" })).poolNamespaces, ["sandboxes"]);
    });
  });

  it("refuses a FSB_PROXY_BASE_URL sandboxes cannot be named under", () => {
    assert.throws(
      () => controllerConfigFromEnv(minimalEnv({ FSB_PROXY_BASE_URL: "http://10.0.0.1:7072" })),
      (error: unknown) => error instanceof ValidationError && error.field === "FSB_PROXY_BASE_URL" && /IP address/.test(error.message),
    );
  });

  describe("required variables", () => {
    it("refuses a missing or empty FSB_POD_NAME, saying where it comes from", () => {
      assertInvalid(minimalEnv({ FSB_POD_NAME: undefined }), "FSB_POD_NAME", /^FSB_POD_NAME: environment variable is required: .*Pod name.*metadata\.name/);
      assertInvalid(minimalEnv({ FSB_POD_NAME: "" }), "FSB_POD_NAME", /environment variable is required/);
    });

    it("refuses a missing FSB_POD_NAMESPACE", () => {
      assertInvalid(
        minimalEnv({ FSB_POD_NAMESPACE: undefined }),
        "FSB_POD_NAMESPACE",
        /^FSB_POD_NAMESPACE: environment variable is required: .*metadata\.namespace/,
      );
    });

    it("refuses missing tokens, naming both ways to give each", () => {
      assertInvalid(minimalEnv({ FSB_TOKEN: undefined }), "FSB_TOKEN", /set FSB_TOKEN or FSB_TOKEN_FILE: the fast-path API is always authenticated/);
      assertInvalid(
        minimalEnv({ FSB_AGENT_TOKEN: "" }),
        "FSB_AGENT_TOKEN",
        /set FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE: the agents' API is always authenticated/,
      );
    });

    it("reads nothing from a real process environment it is not given", () => {
      assertInvalid({}, "FSB_POD_NAME", /required/);
    });
  });

  describe("token files", () => {
    it("reads each token from its file, trimmed", () => {
      const config = controllerConfigFromEnv(
        minimalEnv({
          FSB_TOKEN: undefined,
          FSB_TOKEN_FILE: file("token", "  api-from-file\n"),
          FSB_AGENT_TOKEN: undefined,
          FSB_AGENT_TOKEN_FILE: file("agent-token", "agent-from-file\n"),
        }),
      );
      assert.equal(config.token, "api-from-file");
      assert.equal(config.agentToken, "agent-from-file");
    });

    it("prefers the variable over the file", () => {
      const config = controllerConfigFromEnv(minimalEnv({ FSB_TOKEN: "from-env", FSB_TOKEN_FILE: file("token-ignored", "from-file\n") }));
      assert.equal(config.token, "from-env");
    });

    it("refuses a token file that holds only whitespace", () => {
      assertInvalid(
        minimalEnv({ FSB_AGENT_TOKEN: undefined, FSB_AGENT_TOKEN_FILE: file("blank", " \n\n") }),
        "FSB_AGENT_TOKEN",
        /set FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE/,
      );
    });

    it("fails on a token file that does not exist, naming the file", () => {
      const missing = join(dir, "no-such-token");
      assert.throws(
        () => controllerConfigFromEnv(minimalEnv({ FSB_TOKEN: undefined, FSB_TOKEN_FILE: missing })),
        (error: unknown) => {
          assert.ok(error instanceof Error);
          assert.ok(error.message.includes(missing), error.message);
          return true;
        },
      );
    });
  });

  describe("FSB_LISTEN", () => {
    it("accepts host:port and [v6]:port", () => {
      assert.deepEqual(parseListen("0.0.0.0:7070"), { host: "0.0.0.0", port: 7070 });
      assert.deepEqual(parseListen("localhost:0"), { host: "localhost", port: 0 });
      assert.deepEqual(parseListen("[::]:65535"), { host: "::", port: 65535 });
      assert.deepEqual(parseListen("[fd00::1]:7070"), { host: "fd00::1", port: 7070 });
      const config = controllerConfigFromEnv(minimalEnv({ FSB_LISTEN: "[::1]:9000" }));
      assert.equal(config.host, "::1");
      assert.equal(config.port, 9000);
    });

    for (const listen of ["7070", ":7070", "0.0.0.0:", "0.0.0.0:65536", "0.0.0.0:123456", "0.0.0.0:http", "::1:7070", "[::1]", "host:70:70"]) {
      it(`refuses ${JSON.stringify(listen)}`, () => {
        assertInvalid(minimalEnv({ FSB_LISTEN: listen }), "FSB_LISTEN", /is not host:port \(e\.g\. 0\.0\.0\.0:7070\)/);
      });
    }
  });

  describe("FSB_AGENT_TEMPLATE_FILE", () => {
    it("parses a YAML Pod template into the agent Pod's base template", () => {
      const path = file(
        "template.yaml",
        [
          "metadata:",
          "  labels:",
          "    team: a",
          "spec:",
          "  serviceAccountName: fast-sandbox-agent",
          "  containers:",
          "    - name: agent",
          "      env:",
          "        - name: FSB_AGENT_STATE_DIR",
          "          value: /var/lib/fast-sandbox/agents/$(FSB_AGENT_NAME)",
          "",
        ].join("\n"),
      );
      const config = controllerConfigFromEnv(minimalEnv({ FSB_AGENT_TEMPLATE_FILE: path, FSB_AGENT_IMAGE: "agent:v1" }));
      assert.deepEqual(config.agentPod, {
        image: "agent:v1",
        baseTemplate: {
          metadata: { labels: { team: "a" } },
          spec: {
            serviceAccountName: "fast-sandbox-agent",
            containers: [{ name: "agent", env: [{ name: "FSB_AGENT_STATE_DIR", value: "/var/lib/fast-sandbox/agents/$(FSB_AGENT_NAME)" }] }],
          },
        },
      });
    });

    it("parses the shipped template (config/agent/agent-pod-template.yaml)", () => {
      const path = new URL("../../../../config/agent/agent-pod-template.yaml", import.meta.url).pathname;
      const template = controllerConfigFromEnv(minimalEnv({ FSB_AGENT_TEMPLATE_FILE: path })).agentPod.baseTemplate;
      assert.equal(template?.spec?.containers[0]?.name, "agent");
      assert.equal(template?.spec?.initContainers?.[0]?.name, "install-node-binaries");
    });

    it("refuses a file that does not exist, naming it", () => {
      const missing = join(dir, "no-such-template.yaml");
      assertInvalid(
        minimalEnv({ FSB_AGENT_TEMPLATE_FILE: missing }),
        "FSB_AGENT_TEMPLATE_FILE",
        new RegExp(`cannot read the agent Pod template ${missing.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: .*ENOENT`),
      );
    });

    it("refuses a file that is not YAML", () => {
      assertInvalid(
        minimalEnv({ FSB_AGENT_TEMPLATE_FILE: file("broken.yaml", "spec: [unclosed\n") }),
        "FSB_AGENT_TEMPLATE_FILE",
        /cannot read the agent Pod template/,
      );
    });

    for (const [name, content] of [
      ["list.yaml", "- name: agent\n"],
      ["scalar.yaml", "just text\n"],
      ["number.yaml", "42\n"],
    ] as const) {
      it(`refuses a template that is not a mapping (${name})`, () => {
        const path = file(name, content);
        assertInvalid(
          minimalEnv({ FSB_AGENT_TEMPLATE_FILE: path }),
          "FSB_AGENT_TEMPLATE_FILE",
          /is not a Pod template \(a YAML mapping with metadata and spec\)/,
        );
      });
    }

    for (const [name, content] of [
      ["empty.yaml", ""],
      ["null.yaml", "null\n"],
    ] as const) {
      it(`refuses a template file with no document (${name})`, () => {
        const path = file(name, content);
        // loadYaml itself refuses an empty document ("Failed to load YAML"), before the mapping check.
        assertInvalid(
          minimalEnv({ FSB_AGENT_TEMPLATE_FILE: path }),
          "FSB_AGENT_TEMPLATE_FILE",
          new RegExp(`${name.replace(".", "\\.")}: Failed to load YAML|${name.replace(".", "\\.")} is not a Pod template`),
        );
      });
    }
  });

  describe("FSB_LEASE_DURATION_SECONDS and FSB_HEARTBEAT_INTERVAL_MS", () => {
    it("accept whole numbers of at least 5 (the lease) and 1 (the heartbeat)", () => {
      const config = controllerConfigFromEnv(minimalEnv({ FSB_LEASE_DURATION_SECONDS: "5", FSB_HEARTBEAT_INTERVAL_MS: "1" }));
      assert.equal(config.leaseDurationSeconds, 5);
      assert.equal(config.heartbeatIntervalMs, 1);
    });

    // 1–4 were accepted once, and 1–10 then crashed the controller at start (a fixed 10 s renew deadline).
    for (const value of ["0", "-5", "1", "4", "1.5", "abc", "15s", "Infinity", "NaN"]) {
      it(`refuses FSB_LEASE_DURATION_SECONDS=${JSON.stringify(value)}, saying why`, () => {
        assertInvalid(
          minimalEnv({ FSB_LEASE_DURATION_SECONDS: value }),
          "FSB_LEASE_DURATION_SECONDS",
          new RegExp(`^FSB_LEASE_DURATION_SECONDS: "${value}" is not a whole number of at least 5: the leader must renew the Lease within 2/3 of its duration`),
        );
      });
    }

    it("refuses a bad FSB_HEARTBEAT_INTERVAL_MS", () => {
      assertInvalid(minimalEnv({ FSB_HEARTBEAT_INTERVAL_MS: "0" }), "FSB_HEARTBEAT_INTERVAL_MS", /"0" is not a whole number of at least 1/);
    });
  });
});
