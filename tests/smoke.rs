mod common;

use common::*;

#[tokio::test]
async fn valid_token_reaches_upstream_with_claims() {
    let h = Harness::start(&default_config()).await;
    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ] {
        let mut c = claims();
        c["email"] = "alice@example.com".into();
        let a = h.get_with_token("/hello", &token(alg, &c)).await;
        assert_eq!(a.status, 200, "{alg}: {}", a.body);
        assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{alg}");
        assert_eq!(a.upstream_header("x-auth-email"), ["alice@example.com"]);
        assert!(a.upstream_header("authorization").is_empty());
    }
    let a = h.get("/hello", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );
}
