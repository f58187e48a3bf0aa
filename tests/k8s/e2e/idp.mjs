// The end-to-end test's identity provider: a token endpoint on the host, reached by the pods on the CNI bridge.
//
//   node tests/k8s/e2e/idp.mjs CONFIG.json
//
// CONFIG.json:
//   {"host": "10.88.0.1", "port": 0, "ttl": 30, "events": "/abs/events.jsonl",
//    "clients": {"e2e-client": {"v1": "<secret>", "v2": "<secret>"}},       client_credentials, basic or post
//    "kubernetes": {"issuer": "https://...", "ca_file": "/abs/ca.crt",      the cluster's service-account issuer
//                   "audience": "e2e-idp", "subject": "system:serviceaccount:NS:SA",
//                   "assertion_client_id": "e2e-federated"}}
//
// Grants:
//   client_credentials with a client secret (any version listed: the event names which one was used);
//   client_credentials with client_assertion_type jwt-bearer: the assertion must be a Kubernetes service-account
//     token issued by `issuer`: its signature is checked with a key of the JWKS that the issuer's discovery document
//     (<issuer>/.well-known/openid-configuration, fetched from the API server over TLS with ca_file) points to,
//     and iss, aud (must contain `audience`), sub (= `subject`), exp and nbf are checked;
//   urn:ietf:params:oauth:grant-type:token-exchange: the subject_token is checked the same way.
// Every answer is appended to `events` as one JSON line; a token is recorded as its SHA-256, never in clear.
// Access tokens are 43 characters (32 random bytes, base64url). Stdout: `READY http://<host>:<port>/token`.
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { appendFileSync, readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const k8s = config.kubernetes ?? null;
const JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";

function record(event) {
  appendFileSync(config.events, JSON.stringify({ at: Date.now(), ...event }) + "\n");
}

function getJson(url) {
  return new Promise((resolve, reject) => {
    const ca = k8s.ca_file ? readFileSync(k8s.ca_file) : undefined;
    https
      .get(url, { ca }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`GET ${url}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
          try {
            resolve(JSON.parse(body));
          } catch (e) {
            reject(new Error(`GET ${url}: not JSON: ${e.message}`));
          }
        });
      })
      .on("error", reject);
  });
}

// The issuer's keys, fetched through its discovery document (again when a token names an unknown kid).
let jwks = null;
let jwksUri = null;
async function loadKeys() {
  const discovery = await getJson(`${k8s.issuer}/.well-known/openid-configuration`);
  if (discovery.issuer !== k8s.issuer) throw new Error(`discovery issuer ${discovery.issuer} is not ${k8s.issuer}`);
  jwksUri = discovery.jwks_uri;
  jwks = await getJson(jwksUri);
  record({ event: "jwks", jwks_uri: jwksUri, kids: jwks.keys.map((k) => k.kid) });
}

const b64json = (s) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));

// Verifies a service-account token; returns its claims or throws with the reason.
async function verifyServiceAccountToken(jwt) {
  const parts = String(jwt).split(".");
  if (parts.length !== 3) throw new Error("not a JWS compact serialization");
  const header = b64json(parts[0]);
  if (header.alg !== "RS256") throw new Error(`alg ${header.alg}: only RS256 is expected`);
  let jwk = jwks?.keys.find((k) => k.kid === header.kid);
  if (!jwk) {
    await loadKeys();
    jwk = jwks.keys.find((k) => k.kid === header.kid);
  }
  if (!jwk) throw new Error(`kid ${header.kid} is not in ${jwksUri}`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  const ok = verify("sha256", Buffer.from(`${parts[0]}.${parts[1]}`), key, Buffer.from(parts[2], "base64url"));
  if (!ok) throw new Error("bad signature");
  const claims = b64json(parts[1]);
  const now = Date.now() / 1000;
  if (claims.iss !== k8s.issuer) throw new Error(`iss ${claims.iss} is not ${k8s.issuer}`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(k8s.audience)) throw new Error(`aud ${JSON.stringify(claims.aud)} lacks ${k8s.audience}`);
  if (claims.sub !== k8s.subject) throw new Error(`sub ${claims.sub} is not ${k8s.subject}`);
  if (!(claims.exp > now)) throw new Error("expired");
  if (claims.nbf !== undefined && claims.nbf > now + 5) throw new Error("not yet valid");
  return { sub: claims.sub, aud, kid: header.kid, exp: claims.exp };
}

function secretVersion(clientId, secret) {
  const versions = config.clients?.[clientId];
  if (!versions || typeof secret !== "string") return null;
  for (const [name, value] of Object.entries(versions)) if (value === secret) return name;
  return null;
}

async function answer(form, headers) {
  const grant = form.get("grant_type");
  if (grant === TOKEN_EXCHANGE) {
    if (!k8s) return [400, { error: "unsupported_grant_type" }, { grant }];
    if (form.get("subject_token_type") !== "urn:ietf:params:oauth:token-type:jwt")
      return [400, { error: "invalid_request", error_description: "subject_token_type" }, { grant }];
    const claims = await verifyServiceAccountToken(form.get("subject_token"));
    return [200, null, { grant: "token_exchange", auth: "k8s-subject-token", ...claims }];
  }
  if (grant !== "client_credentials") return [400, { error: "unsupported_grant_type" }, { grant }];
  if (form.get("client_assertion_type") === JWT_BEARER) {
    if (!k8s) return [401, { error: "invalid_client" }, { grant }];
    const id = form.get("client_id");
    if (id !== null && id !== k8s.assertion_client_id) return [401, { error: "invalid_client" }, { grant, client_id: id }];
    const claims = await verifyServiceAccountToken(form.get("client_assertion"));
    return [200, null, { grant, auth: "k8s-assertion", client_id: id, ...claims }];
  }
  let id = form.get("client_id");
  let secret = form.get("client_secret");
  let auth = "client_secret_post";
  const basic = /^Basic (.+)$/i.exec(headers.authorization ?? "");
  if (basic) {
    const raw = Buffer.from(basic[1], "base64").toString("utf8");
    const i = raw.indexOf(":");
    id = decodeURIComponent(raw.slice(0, i).replace(/\+/g, " "));
    secret = decodeURIComponent(raw.slice(i + 1).replace(/\+/g, " "));
    auth = "client_secret_basic";
  }
  const version = secretVersion(id, secret);
  if (!version) return [401, { error: "invalid_client" }, { grant, auth, client_id: id }];
  return [200, null, { grant, auth, client_id: id, secret_version: version }];
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    let status, error, event;
    try {
      if (req.method !== "POST" || req.url !== "/token") [status, error, event] = [404, { error: "not_found" }, {}];
      else [status, error, event] = await answer(new URLSearchParams(body), req.headers);
    } catch (e) {
      [status, error, event] = [401, { error: "invalid_client", error_description: e.message }, { reason: e.message }];
    }
    let response = error;
    if (status === 200) {
      const token = randomBytes(32).toString("base64url");
      const now = Date.now();
      response = { access_token: token, token_type: "Bearer", expires_in: config.ttl };
      event.token_sha256 = createHash("sha256").update(token).digest("hex");
      event.issued_at = now;
      event.expires_at = now + config.ttl * 1000;
    }
    record({ event: "token", status, remote: req.socket.remoteAddress, ...(error ?? {}), ...event });
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(response));
  });
});

for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));

try {
  if (k8s) await loadKeys();
} catch (e) {
  console.error(`idp: cannot read the service-account issuer's keys: ${e.message}`);
  process.exit(2);
}
server.listen(config.port, config.host, () => {
  console.log(`READY http://${config.host}:${server.address().port}/token`);
});
