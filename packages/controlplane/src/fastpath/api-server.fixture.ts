import { pino } from "pino";
import type { AccessReview } from "./access-review.js";
import { startApiServer, type ApiServer } from "./api-server.js";
import { CheckpointManager } from "./checkpoint-manager.js";
import { SandboxManagerFixture } from "./sandbox-manager.fixture.js";

/** The fast-path API token of `withApiServer`. */
export const API_TOKEN = "test-token-0123456789abcdef";

/** Runs `test` against an API server (token API_TOKEN) over a fresh SandboxManagerFixture, closing both after. */
export async function withApiServer(
  options: { host?: string; review?: AccessReview },
  test: (api: ApiServer, fixture: SandboxManagerFixture) => Promise<void>,
): Promise<void> {
  const fixture = new SandboxManagerFixture();
  const { manager, store, registry, agents } = fixture;
  const checkpoints = new CheckpointManager({ manager, store, registry, agents, logger: pino({ level: "silent" }) });
  const api = await startApiServer({
    manager,
    store,
    registry,
    agents,
    checkpoints,
    token: API_TOKEN,
    ...(options.review ? { review: options.review } : {}),
    host: options.host ?? "127.0.0.1",
    port: 0,
  });
  try {
    await test(api, fixture);
  } finally {
    await api.close();
    checkpoints.close();
    await fixture.close();
  }
}
