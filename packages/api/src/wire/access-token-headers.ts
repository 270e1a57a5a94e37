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
 * The same token under E2B's name for traffic to a sandbox's own ports (its "traffic access token",
 * which E2B API answers carry as `trafficAccessToken`): E2B's code-interpreter SDKs send only this one
 * on some calls (contexts). The proxy takes either header, and removes both.
 */
export const TRAFFIC_ACCESS_TOKEN_HEADER = "e2b-traffic-access-token";

/**
 * Request header of a CONNECT to an agent's relay: the instance id of the sandbox the caller means
 * at the address it names. The relay refuses when the address is another sandbox's now (a record
 * older than a node's restart, an address handed out again).
 */
export const RELAY_SANDBOX_HEADER = "fsb-sandbox-id";
