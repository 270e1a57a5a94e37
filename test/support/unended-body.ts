/**
 * A request whose body never ends, for specs of servers that must answer before reading a body
 * (the control plane's and the agent's token check).
 */
import http from "node:http";
import http2 from "node:http2";

/**
 * The answer to a POST of `path` whose body is `body` but never ends: only a server that answers
 * without reading the body answers within `withinMs`.
 */
export async function answerToUnendedBody(
  baseUrl: string,
  version: "1.1" | "2",
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  withinMs = 5_000,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const session = version === "2" ? http2.connect(baseUrl) : undefined;
  let request: http.ClientRequest | http2.ClientHttp2Stream | undefined;
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer within ${withinMs} ms while the request's body was still open`)), withinMs);
      const answered = (status: number, head: http.IncomingHttpHeaders, stream: NodeJS.ReadableStream) => {
        let text = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => {
          clearTimeout(timer);
          resolve({ status, headers: head, body: text });
        });
      };
      if (session) {
        session.on("error", reject);
        const stream = (request = session.request({ ":method": "POST", ":path": path, ...headers }));
        stream.on("error", reject);
        stream.on("response", (head) => answered(Number(head[":status"]), head, stream));
      } else {
        request = http.request(`${baseUrl}${path}`, { method: "POST", headers });
        request.on("error", reject);
        request.on("response", (response) => answered(response.statusCode ?? 0, response.headers, response));
      }
      request.write(body);
    });
  } finally {
    request?.destroy();
    session?.destroy();
  }
}
