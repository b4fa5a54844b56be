// A real OAuth authorization server for the OAuth tests: npm's oidc-provider (OpenID certified),
// configured for the client_credentials grant with resource indicators (RFC 8707) and short-lived
// JWT access tokens. Nothing here speaks the protocol: the library does.
// Usage: node oidc_provider.mjs PORT RESOURCE_URL TTL_SECONDS [--without-client]
// (--without-client: the same provider with the client removed, i.e. disabled by its admin.)
import Provider from 'oidc-provider';

const [port, resource, ttl] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const withoutClient = process.argv.includes('--without-client');
const issuer = `http://127.0.0.1:${port}`;
const clients = withoutClient ? [] : [{
  client_id: 'mcp-supervisor',
  client_secret: process.env.OIDC_CLIENT_SECRET,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
}];

const provider = new Provider(issuer, {
  clients,
  scopes: ['mcp'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
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
});
provider.on('grant.success', (ctx) => console.log(`token issued to ${ctx.oidc.client?.clientId}`));
provider.on('grant.error', (ctx, err) => console.log(`token refused: ${err.error}`));
provider.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
