//! The Check-in stand-in over real HTTP: the login form, the code exchange with PKCE,
//! userinfo, and the errors a relying party must handle.

use std::collections::HashMap;
use std::time::Duration;

use kelp_test_peers::oidc::{Checkin, OidcUser, entitlement, pkce_challenge, verify_id_token};
use reqwest::{StatusCode, Url};
use serde_json::Value;

const CLIENT: &str = "kelp-console";
const SECRET: &str = "console-secret";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

async fn provider() -> Checkin {
    let c = Checkin::start().await;
    c.add_client(CLIENT, SECRET, &[REDIRECT]);
    c.add_user(OidcUser::new("alice", "alice-pw"));
    c
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn auth_params(redirect: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", CLIENT.into()),
        ("redirect_uri", redirect.into()),
        ("scope", "openid profile email eduperson_entitlement".into()),
        ("state", "st-1".into()),
        ("nonce", "n-1".into()),
        ("code_challenge", pkce_challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
    ]
}

fn query(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Posts the login form as a browser would: the request's fields and the credentials.
async fn post_login(c: &Checkin, password: &str) -> reqwest::Response {
    let mut form = auth_params(REDIRECT);
    form.push(("username", "alice".into()));
    form.push(("password", password.into()));
    http()
        .post(c.authorize_url())
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Logs alice in; returns the code of the redirect.
async fn code(c: &Checkin) -> String {
    let r = post_login(c, "alice-pw").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["state"], "st-1");
    q["code"].clone()
}

async fn redeem(c: &Checkin, code: &str, verifier: &str, redirect: &str) -> (StatusCode, Value) {
    let r = http()
        .post(c.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_s256() {
    let c = provider().await;
    let d: Value = http()
        .get(c.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], c.issuer());
    assert_eq!(d["authorization_endpoint"], c.authorize_url());
    assert_eq!(d["token_endpoint"], c.token_url());
    assert_eq!(d["userinfo_endpoint"], c.userinfo_url());
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
}

#[tokio::test]
async fn login_form_then_code_then_tokens_and_userinfo() {
    let c = provider().await;
    let page = http()
        .get(c.authorize_url())
        .query(&auth_params(REDIRECT))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for needle in [
        "id=\"username\"",
        "id=\"password\"",
        "id=\"login\"",
        "<label for=\"username\"",
        "name=\"code_challenge\"",
    ] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }

    let code = code(&c).await;
    let (status, body) = redeem(&c, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let claims = verify_id_token(body["id_token"].as_str().unwrap(), SECRET).expect("signed");
    assert_eq!(claims["iss"], c.issuer());
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["sub"], "alice-0123456789abcdef@egi.eu");
    assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
    assert!(verify_id_token(body["id_token"].as_str().unwrap(), "other").is_none());

    let info: Value = http()
        .get(c.userinfo_url())
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email"], "alice@example.org");
    assert_eq!(
        info["eduperson_entitlement"],
        serde_json::json!([entitlement("vo.imagine-ai.eu", "member")])
    );
    let req = c.last_token_request().unwrap();
    assert_eq!(req.form["code_verifier"], VERIFIER);
    assert_eq!(c.calls_to("/userinfo"), 1);
}

#[tokio::test]
async fn basic_client_authentication_is_accepted() {
    let c = provider().await;
    let code = code(&c).await;
    let r = http()
        .post(c.token_url())
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.last_token_request().unwrap().basic_client_id.as_deref(),
        Some(CLIENT)
    );
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let c = provider().await;
    let code = code(&c).await;
    let other = "a-different-verifier-of-sufficient-length-0123456789";
    let (status, body) = redeem(&c, &code, other, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    // The failed attempt spent the code.
    let (_, body) = redeem(&c, &code, VERIFIER, REDIRECT).await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_is_single_use() {
    let c = provider().await;
    let code = code(&c).await;
    assert_eq!(
        redeem(&c, &code, VERIFIER, REDIRECT).await.0,
        StatusCode::OK
    );
    let (status, body) = redeem(&c, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let c = provider().await;
    c.set_code_lifetime(Duration::from_millis(50));
    let code = code(&c).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        redeem(&c, &code, VERIFIER, REDIRECT).await.1["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client() {
    let c = provider().await;
    let code = code(&c).await;
    let r = http()
        .post(c.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("client_secret", "guess"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_a_page_not_a_redirect() {
    let c = provider().await;
    let r = http()
        .get(c.authorize_url())
        .query(&auth_params("http://127.0.0.1:9/elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("not registered"));
    // Nor may the token request name another redirect URI than the authorization did.
    let code = code(&c).await;
    let (status, body) = redeem(&c, &code, VERIFIER, "http://127.0.0.1:9/other").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn an_unknown_client_gets_a_page() {
    let c = provider().await;
    let mut params = auth_params(REDIRECT);
    params[1].1 = "stranger".into();
    let r = http()
        .get(c.authorize_url())
        .query(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn pkce_is_required_and_must_be_s256() {
    let c = provider().await;
    for (drop, method) in [(true, "S256"), (false, "plain")] {
        let params: Vec<_> = auth_params(REDIRECT)
            .into_iter()
            .filter(|(k, _)| !(drop && *k == "code_challenge"))
            .map(|(k, v)| match k {
                "code_challenge_method" => (k, method.to_string()),
                _ => (k, v),
            })
            .collect();
        let r = http()
            .get(c.authorize_url())
            .query(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let q = query(r.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "invalid_request");
        assert_eq!(q["state"], "st-1");
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again() {
    let c = provider().await;
    let r = post_login(&c, "not-her-password").await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong username or password"), "{html}");
    assert!(html.contains("id=\"password\""));
    assert!(html.contains("value=\"alice\""), "the username is kept");
}

#[tokio::test]
async fn the_refresh_grant_still_serves_the_egi_driver() {
    let c = Checkin::start().await;
    c.add("rt-1", "fake:alice:vo");
    let r = http()
        .post(c.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("client_id", "any"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["access_token"],
        "fake:alice:vo"
    );
    c.revoke("rt-1");
    let r = http()
        .post(c.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("client_id", "any"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(c.calls(), 2);
}
