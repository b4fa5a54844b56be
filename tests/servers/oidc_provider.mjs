// A real OAuth authorization server for the OAuth tests: npm's oidc-provider (OpenID certified).
// Nothing here speaks the protocol: the library does. Enabled: client credentials (a secret client
// and, with OIDC_JWT_CLIENT_JWK, a private_key_jwt client), the device grant (RFC 8628) with the
// library's own pages (devInteractions: any login, then consent), dynamic client registration
// (RFC 7591), refresh tokens rotated on every use with reuse detection (a consumed refresh token
// sent again revokes the whole grant), resource indicators (RFC 8707) with short-lived JWT access
// tokens.
// Usage: node oidc_provider.mjs PORT RESOURCE_URL TTL_SECONDS [--without-client]
// (--without-client: the secret client removed, i.e. disabled by its admin.)
// Test hooks beside the provider: POST /test/revoke-grants destroys every grant issued so far
// (an admin revoking the grants); the log says "refresh rotated", "token refused: <code> <why>".
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, resource, ttl] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const withoutClient = process.argv.includes('--without-client');
const issuer = `http://127.0.0.1:${port}`;
const clients = [{
  client_id: 'mcp-device',
  client_name: 'mcp-supervisor (configured)',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'none',
}];
if (!withoutClient) {
  clients.push({
    client_id: 'mcp-supervisor',
    client_secret: process.env.OIDC_CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}
if (process.env.OIDC_JWT_CLIENT_JWK) {
  clients.push({
    client_id: 'mcp-jwt',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: [JSON.parse(process.env.OIDC_JWT_CLIENT_JWK)] },
  });
}

const grants = new Set();
const provider = new Provider(issuer, {
  clients,
  scopes: ['mcp', 'offline_access'],
  ttl: { DeviceCode: 300, RefreshToken: 3600, Grant: 3600, Session: 3600, Interaction: 600 },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
        return { scope: 'mcp', audience: resource, accessTokenTTL: ttl, accessTokenFormat: 'jwt' };
      },
    },
  },
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session?.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
});
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  console.log(type === 'refresh_token' ? `refresh rotated for ${ctx.oidc.client?.clientId}`
    : `token issued to ${ctx.oidc.client?.clientId} (${type})`);
});
provider.on('grant.error', (ctx, err) => console.log(`token refused: ${err.error} ${err.error_description}`));
provider.on('grant.saved', (grant) => grants.add(grant.jti));

const handler = provider.callback();
http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url === '/test/revoke-grants') {
    let revoked = 0;
    for (const id of grants) {
      const grant = await provider.Grant.find(id);
      if (grant) { await grant.destroy(); revoked += 1; }
    }
    grants.clear();
    console.log(`revoked ${revoked} grants`);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ revoked }));
    return;
  }
  handler(req, res);
}).listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
