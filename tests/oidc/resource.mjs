// The resource server both test providers (provider.mjs, bound.mjs) issue access tokens for:
// "urn:jwtgate:api", JWT access tokens (RFC 9068) with aud "jwtgate-api" and scope
// "api:read", signed ES256, valid five minutes.

export const RESOURCE = 'urn:jwtgate:api';

// oidc-provider's features.resourceIndicators for that one resource.
export function resourceIndicators(Provider) {
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
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      };
    },
  };
}
