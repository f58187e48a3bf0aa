// A real OAuth2 client-credentials token server (panva's oidc-provider) for the
// token-vendor integration tests.
//
//   node tests/servers/oidc-server.mjs CONFIG.json
//
// CONFIG.json: {"port": 0, "ttl": 6, "issuer_resource": null,
//               "scopes": ["read", "write"], "strict_auth": false,   (optional; defaults)
//               "clients": [{"client_id": "...", "client_secret": "...",
//                            "auth": "client_secret_basic" | "client_secret_post"},
//                           {"client_id": "...", "auth": "private_key_jwt",
//                            "public_key_pem": "-----BEGIN PUBLIC KEY-----..." | [...] | "jwks": {"keys": [...]},
//                            "signing_alg": "ES256", "kid": "..."}]}              (optional)
//
// Prints exactly one line to stdout once listening: `READY http://127.0.0.1:<port>/token`.
// Everything else goes to stderr. SIGHUP re-reads the file (clients, ttl, strict_auth,
// issuer_resource; changes to port and scopes are ignored). SIGTERM/SIGINT exit with status 0.
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import process from 'node:process';

const log = (...args) => console.error('[oidc-server]', ...args);
const startedAt = process.hrtime.bigint();

const configPath = process.argv[2];
if (!configPath) {
  log('usage: node oidc-server.mjs CONFIG.json');
  process.exit(2);
}

const AUTH_METHODS = new Set(['client_secret_basic', 'client_secret_post', 'private_key_jwt']);
// oidc-provider's default list lacks ES384; HS* stays off (no client_secret_jwt here).
const CLIENT_AUTH_ALGS = ['RS256', 'PS256', 'ES256', 'ES384'];

// A private_key_jwt client's verification keys: given as a JWKS, or as SPKI PEMs turned into JWKs here.
function clientJwks(c) {
  if (c.jwks !== undefined) {
    if (!Array.isArray(c.jwks?.keys)) throw new Error(`client ${c.client_id}: jwks must be {"keys": [...]}`);
    return c.jwks;
  }
  const pems = Array.isArray(c.public_key_pem) ? c.public_key_pem : [c.public_key_pem];
  if (!pems.length || !pems.every((p) => typeof p === 'string' && p.includes('BEGIN PUBLIC KEY'))) {
    throw new Error(`client ${c.client_id}: private_key_jwt needs jwks or public_key_pem (SPKI PEM, or an array of them)`);
  }
  return {
    keys: pems.map((p) => ({ ...createPublicKey(p).export({ format: 'jwk' }), ...(c.kid ? { kid: c.kid } : {}) })),
  };
}

function loadConfig() {
  const raw = JSON.parse(readFileSync(configPath, 'utf8'));
  const port = raw.port ?? 0;
  const ttl = raw.ttl ?? 3600;
  const issuerResource = raw.issuer_resource ?? null;
  const scopes = raw.scopes ?? ['read', 'write'];
  const strictAuth = raw.strict_auth ?? false;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('port must be an integer 0-65535');
  if (!Number.isInteger(ttl) || ttl < 1) throw new Error('ttl must be a positive integer (seconds)');
  if (issuerResource !== null) new URL(issuerResource); // throws on a non-URL
  if (!Array.isArray(scopes) || !scopes.every((x) => typeof x === 'string' && /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(x))) {
    throw new Error('scopes must be an array of scope tokens');
  }
  if (typeof strictAuth !== 'boolean') throw new Error('strict_auth must be a boolean');
  if (!Array.isArray(raw.clients)) throw new Error('clients must be an array');
  const clients = new Map();
  for (const c of raw.clients) {
    const auth = c.auth ?? 'client_secret_basic';
    if (typeof c.client_id !== 'string' || !c.client_id) throw new Error('client_id must be a non-empty string');
    if (!AUTH_METHODS.has(auth)) throw new Error(`client ${c.client_id}: auth must be one of ${[...AUTH_METHODS].join(', ')}`);
    if (clients.has(c.client_id)) throw new Error(`duplicate client_id ${c.client_id}`);
    const metadata = {
      client_id: c.client_id,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: auth,
    };
    if (auth === 'private_key_jwt') {
      metadata.jwks = clientJwks(c);
      if (c.signing_alg !== undefined) {
        if (!CLIENT_AUTH_ALGS.includes(c.signing_alg)) throw new Error(`client ${c.client_id}: signing_alg must be one of ${CLIENT_AUTH_ALGS.join(', ')}`);
        metadata.token_endpoint_auth_signing_alg = c.signing_alg;
      }
    } else {
      if (typeof c.client_secret !== 'string' || !c.client_secret) throw new Error(`client ${c.client_id}: client_secret must be a non-empty string`);
      metadata.client_secret = c.client_secret;
    }
    clients.set(c.client_id, metadata);
  }
  return { port, ttl, issuerResource, scopes, strictAuth, clients };
}

let config;
try {
  config = loadConfig();
} catch (err) {
  log(`invalid config ${configPath}: ${err.message}`);
  process.exit(2);
}

// Storage for all oidc-provider models. Clients are not registered statically
// (oidc-provider caches those for the process's life) but served from `config`,
// so a SIGHUP that changes a secret takes effect on the next request: the
// provider keys its parsed-client cache by a hash of the client's metadata.
const stores = new Map();
let upserts = 0;
class Adapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload, expiresAt });
    if (++upserts % 1000 === 0) {
      const now = Date.now();
      for (const store of stores.values()) {
        for (const [k, v] of store) if (v.expiresAt <= now) store.delete(k);
      }
    }
  }

  async find(id) {
    if (this.name === 'Client') return config.clients.get(id);
    const entry = this.store.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.store.delete(id);
      return undefined;
    }
    return entry.payload;
  }

  async findByUserCode() { return undefined; }

  async findByUid() { return undefined; }

  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [k, v] of this.store) if (v.payload.grantId === grantId) this.store.delete(k);
  }
}

// Import after the config check so a bad config fails fast and quietly.
const { default: Provider, errors } = await import('oidc-provider');

const server = createServer();
server.on('error', (err) => {
  log(`listen failed: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => server.listen(config.port, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'test-es256' };

const startupScopes = config.scopes;
const provider = new Provider(issuer, {
  adapter: Adapter,
  jwks: { keys: [signingKey] },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  // Requested scopes outside this list are silently dropped from the grant
  // (oidc-provider's behaviour); it is fixed at startup, SIGHUP does not change it.
  scopes: ['openid', ...startupScopes],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clientAuthMethods: [...AUTH_METHODS],
  enabledJWA: { clientAuthSigningAlgValues: CLIENT_AUTH_ALGS },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Only a `resource` equal to issuer_resource is known; it gets a JWT whose
      // `aud` is that URL and which carries the requested scopes found in `scopes`.
      defaultResource: (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: () => false,
      getResourceServerInfo: (_ctx, resourceIndicator) => {
        if (config.issuerResource === null || resourceIndicator !== config.issuerResource) {
          throw new errors.InvalidTarget();
        }
        return {
          audience: resourceIndicator,
          scope: startupScopes.join(' '),
          accessTokenFormat: 'jwt',
          accessTokenTTL: config.ttl,
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: { ClientCredentials: () => config.ttl },
});

provider.on('server_error', (_ctx, err) => log('server_error:', err));
provider.on('grant.error', (ctx, err) => {
  log(`token error: ${err.statusCode ?? '?'} ${err.error ?? err.name}: ${err.error_description ?? err.message} (client ${ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id ?? '-'})`);
});

// oidc-provider accepts client_secret_basic and client_secret_post for every
// client whatever it is registered with. With "strict_auth": true a successful
// token response is replaced by 401 invalid_client when the method used is not
// the client's registered one, so a test can prove which method was sent.
provider.use(async (ctx, next) => {
  await next();
  const client = ctx.oidc?.client;
  if (!config.strictAuth || ctx.status !== 200 || ctx.oidc?.route !== 'token' || !client) return;
  const registered = config.clients.get(client.clientId)?.token_endpoint_auth_method;
  // oidc-provider itself refuses an assertion for a secret client and a secret for a key client.
  if (registered === 'private_key_jwt') return;
  const used = ctx.headers.authorization !== undefined ? 'client_secret_basic' : 'client_secret_post';
  if (used !== registered) {
    log(`strict_auth: ${client.clientId} used ${used}, registered ${registered}: answering 401`);
    ctx.status = 401;
    ctx.body = { error: 'invalid_client', error_description: `client authentication failed (${used} used, client uses ${registered})` };
  }
});

server.on('request', provider.callback());

process.on('SIGHUP', () => {
  try {
    const next = loadConfig();
    if (next.port !== config.port) log(`SIGHUP: port change to ${next.port} ignored (still ${port})`);
    config = next;
    log(`SIGHUP: reloaded ${config.clients.size} client(s), ttl ${config.ttl}s, issuer_resource ${config.issuerResource}`);
  } catch (err) {
    log(`SIGHUP: keeping the previous config, the new one is invalid: ${err.message}`);
  }
});

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

const ms = Number(process.hrtime.bigint() - startedAt) / 1e6;
log(`listening on ${issuer} (pid ${process.pid}, ${ms.toFixed(0)} ms, ttl ${config.ttl}s, ${config.clients.size} client(s), issuer_resource ${config.issuerResource})`);
process.stdout.write(`READY ${issuer}/token\n`);
