// Calls an API with the token token-vendor vends, Node 18+ only (global fetch).
//
// Pattern: cache the token until the refresh_time in token.json, then read the file again by path.
// vendedFetch wraps fetch: the app calls it wherever it called fetch.

import { readFile } from "node:fs/promises";
import { join } from "node:path";

export function vendedFetch(tokenDir) {
  const path = join(tokenDir, "token.json");
  let cached = null; // { token, refreshTime (ms since the epoch) }
  async function token() {
    if (cached === null || Date.now() >= cached.refreshTime) {
      // By path, every time: each refresh replaces the file with a new one.
      const doc = JSON.parse(await readFile(path, "utf8"));
      if (typeof doc.access_token !== "string" || Number.isNaN(Date.parse(doc.refresh_time))) {
        throw new Error(`${path}: no access_token or refresh_time`);
      }
      cached = { token: doc.access_token, refreshTime: Date.parse(doc.refresh_time) };
    }
    return cached.token;
  }
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${await token()}`);
    return fetch(url, { ...init, headers });
  };
}

// --- The example contract (TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out) ---

const { TOKEN_DIR, API_URL, DURATION } = process.env;
const duration = Number(DURATION);
if (!TOKEN_DIR || !API_URL || !DURATION || !(duration >= 0)) {
  console.error("node: set TOKEN_DIR, API_URL and DURATION (seconds)");
  process.exit(2);
}
const apiFetch = vendedFetch(TOKEN_DIR);
let requests = 0;
let rejected = 0;
const start = performance.now();
while (performance.now() < start + duration * 1000) {
  requests++;
  let problem = null;
  try {
    const resp = await apiFetch(API_URL, { signal: AbortSignal.timeout(5000) });
    await resp.arrayBuffer();
    if (!resp.ok) problem = `HTTP ${resp.status}`;
  } catch (e) {
    problem = String(e);
  }
  if (problem !== null && ++rejected <= 3) console.error(`node: request ${requests}: ${problem}`);
  // Ten a second, on a fixed schedule, so a slow answer does not lower the rate.
  const wait = start + requests * 100 - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
console.log(`requests=${requests} rejected=${rejected}`);
