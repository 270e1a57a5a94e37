/**
 * Parses a `WWW-Authenticate` header (RFC 7235) into its challenges. Registries answer an
 * anonymous request with `Bearer realm="https://auth.example/token",service="…",scope="…"`
 * (the token flow of the distribution spec) or `Basic realm="…"` (htpasswd).
 */

export interface AuthChallenge {
  /** Lower-cased: `bearer`, `basic`, … */
  scheme: string;
  /** Parameter names lower-cased; values unquoted. */
  params: Record<string, string>;
}

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;

/** Every challenge of the header, in order; malformed trailing parts are ignored. */
export function parseAuthChallenges(header: string): AuthChallenge[] {
  const challenges: AuthChallenge[] = [];
  let position = 0;
  const skipSpace = () => {
    while (position < header.length && /[\s,]/.test(header[position] ?? "")) position++;
  };
  const token = (): string | undefined => {
    TOKEN.lastIndex = position;
    const match = TOKEN.exec(header);
    if (!match) return undefined;
    position = TOKEN.lastIndex;
    return match[0];
  };
  const quoted = (): string => {
    // position is at the opening quote
    let value = "";
    position++;
    while (position < header.length) {
      const character = header[position++];
      if (character === "\\") value += header[position++] ?? "";
      else if (character === '"') return value;
      else value += character;
    }
    return value;
  };

  for (;;) {
    skipSpace();
    const scheme = token();
    if (!scheme) break;
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    // Parameters until the next token that is not followed by "=" (the next scheme).
    for (;;) {
      const save = position;
      skipSpace();
      const name = token();
      if (!name) break;
      while (header[position] === " ") position++;
      if (header[position] !== "=") {
        // A token68 (e.g. `Negotiate abc==`) or the next scheme: leave it for the outer loop.
        position = save;
        break;
      }
      position++;
      while (header[position] === " ") position++;
      const value = header[position] === '"' ? quoted() : (token() ?? "");
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return challenges;
}
