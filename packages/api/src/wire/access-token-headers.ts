/**
 * Where a sandbox's access token travels. The control plane tells it in a response header of
 * CreateSandbox (the response body stays the Sandbox, which never holds the token); clients send it
 * to the sandbox proxy in `X-Access-Token`, E2B's header for the same purpose.
 */

/** Response header of CreateSandbox holding the new sandbox's access token. */
export const ACCESS_TOKEN_RESPONSE_HEADER = "fsb-access-token";

/** Request header of every request through the sandbox proxy (removed before the sandbox sees it). */
export const ACCESS_TOKEN_HEADER = "x-access-token";

/**
 * E2B's header for traffic to a sandbox's own ports: it carries the sandbox's traffic token (E2B API
 * answers' `trafficAccessToken`, a token of its own that opens every port but the daemon's), which
 * E2B's code-interpreter SDKs send alone on some calls (contexts). The proxy removes it, and
 * `X-Access-Token`, before the sandbox sees the request.
 */
export const TRAFFIC_ACCESS_TOKEN_HEADER = "e2b-traffic-access-token";

/**
 * Request header of a CONNECT to an agent's relay: the instance id of the sandbox the caller means
 * at the address it names. The relay refuses when the address is another sandbox's now (a record
 * older than a node's restart, an address handed out again).
 */
export const RELAY_SANDBOX_HEADER = "fsb-sandbox-id";
