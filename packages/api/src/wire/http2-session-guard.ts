import type { ClientHttp2Session, ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from "node:http2";

/** What connect-node's HTTP/2 transports ask of a session manager (its `NodeHttp2ClientSessionManager`). */
export interface Http2Sessions {
  authority: string;
  request(method: string, path: string, headers: OutgoingHttpHeaders, options: Omit<ClientSessionRequestOptions, "signal">): Promise<ClientHttp2Stream>;
  notifyResponseByteRead(stream: ClientHttp2Stream): void;
}

/**
 * `sessions` with every HTTP/2 session it opens kept from ending the process by an error nobody
 * listens to. connect-node's `Http2SessionManager` stops listening to a session when it leaves it
 * (an `abort()`, the session's failure), but Node emits a failed session's error only when its
 * socket has closed, later: a peer that answers HTTP/2 with something else ("Protocol error"), then
 * `abort()` — a client's `close()` — and Node threw that error as unhandled, ending the program.
 * The calls on the session still fail with it, through their streams; this listener only keeps the
 * late copy from being thrown.
 */
export function guardSessionErrors(sessions: Http2Sessions): Http2Sessions {
  const guarded = new WeakSet<ClientHttp2Session>();
  const guard = (session: ClientHttp2Session | undefined): void => {
    if (!session || guarded.has(session)) return;
    guarded.add(session);
    session.on("error", ignoreLateSessionError);
  };
  return {
    authority: sessions.authority,
    async request(method, path, headers, options) {
      const stream = await sessions.request(method, path, headers, options);
      guard(stream.session as ClientHttp2Session | undefined);
      return stream;
    },
    notifyResponseByteRead: (stream) => sessions.notifyResponseByteRead(stream),
  };
}

function ignoreLateSessionError(): void {}
