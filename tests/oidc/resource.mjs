// The resource server every test provider (provider.mjs, bound.mjs, stepup.mjs,
// session-provider.mjs) issues access tokens for: "urn:jwtgate:api", JWT access tokens
// (RFC 9068) with aud "jwtgate-api" and scope "api:read", signed ES256, valid five minutes
// unless the provider says otherwise.

export const RESOURCE = 'urn:jwtgate:api';

// oidc-provider's features.resourceIndicators for that one resource; access tokens live
// `accessTokenTTL` seconds.
export function resourceIndicators(Provider, accessTokenTTL = 300) {
  return {
    enabled: true,
    defaultResource: () => RESOURCE,
    useGrantedResource: () => true,
    getResourceServerInfo: (_ctx, resourceIndicator) => {
      if (resourceIndicator !== RESOURCE) {
        throw new Provider.errors.InvalidTarget();
      }
      return {
        scope: 'api:read',
        audience: 'jwtgate-api',
        accessTokenTTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      };
    },
  };
}
