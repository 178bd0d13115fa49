// What a browser's fetch adds to a cross-origin call, over Node's fetch (which has no CORS):
// the Origin header, a preflight (OPTIONS) for every call that is not "simple" — every SDK call
// is not, as it sends Authorization and a JSON Content-Type — and the checks a browser makes of
// the preflight's answer and of the answer itself. A refusal rejects as a browser's fetch does,
// with a TypeError, so the SDK sees what it would see in a page.

// Request headers a browser sends without a preflight (the CORS-safelisted ones, as far as the SDK goes).
const SAFELISTED = new Set(["accept", "accept-language", "content-language"]);
const SIMPLE_METHODS = new Set(["GET", "HEAD", "POST"]);

export const seen = { preflights: 0, calls: 0 };

function refuse(why: string): never {
  throw new TypeError(`Failed to fetch (CORS): ${why}`);
}

function listed(value: string | null, wanted: string): boolean {
  const items = (value ?? "").split(",").map((s) => s.trim().toLowerCase());
  return items.includes("*") || items.includes(wanted.toLowerCase());
}

export function installBrowserFetch(origin: string): void {
  const nodeFetch = globalThis.fetch;
  globalThis.fetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init.method ?? "GET").toUpperCase();
    const headers = new Headers(init.headers);
    const unsafe = [...headers.keys()].filter((name) => !SAFELISTED.has(name)).sort();
    if (url.origin !== origin && (!SIMPLE_METHODS.has(method) || unsafe.length > 0)) {
      const preflight = await nodeFetch(url, {
        method: "OPTIONS",
        headers: {
          Origin: origin,
          "Access-Control-Request-Method": method,
          ...(unsafe.length ? { "Access-Control-Request-Headers": unsafe.join(",") } : {}),
        },
      });
      seen.preflights++;
      if (!preflight.ok) refuse(`preflight of ${method} ${url.pathname} answered ${preflight.status}`);
      if (preflight.headers.get("access-control-allow-origin") !== origin) {
        refuse(`preflight of ${url.pathname} did not allow origin ${origin}`);
      }
      if (!SIMPLE_METHODS.has(method) && !listed(preflight.headers.get("access-control-allow-methods"), method)) {
        refuse(`preflight did not allow method ${method}`);
      }
      for (const name of unsafe) {
        if (!listed(preflight.headers.get("access-control-allow-headers"), name)) {
          refuse(`preflight did not allow header ${name}`);
        }
      }
    }
    headers.set("Origin", origin);
    const response = await nodeFetch(url, { ...init, headers });
    seen.calls++;
    if (response.headers.get("access-control-allow-origin") !== origin) {
      refuse(`${method} ${url.pathname} answered ${response.status} without allowing origin ${origin}`);
    }
    return response;
  };
}
