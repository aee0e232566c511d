//! The browser harness end to end: headless chromium logs in on the Check-in stand-in's
//! form and lands on a relying party on 127.0.0.1, which then redeems the code with its
//! PKCE verifier as `kelp console` does. Skips without chromium unless
//! `KELP_REQUIRE_BROWSER=1`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::browser::Browser;
use kelp_test_peers::oidc::{Checkin, OidcUser, entitlement, verify_id_token};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CLIENT: &str = "kelp-console";
const SECRET: &str = "console-secret";

/// A relying party's callback: shows the query it got and the cookies the browser
/// sent, and sets a cookie of its own (to tell browser sessions apart).
async fn callback(RawQuery(q): RawQuery, headers: HeaderMap) -> impl IntoResponse {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        [(header::SET_COOKIE, "rp_seen=yes; Path=/; SameSite=Lax")],
        Html(format!(
            "<!doctype html><title>callback</title><pre id=\"query\">{}</pre><pre id=\"cookies\">[{}]</pre>",
            esc(&q.unwrap_or_default()),
            esc(&cookies)
        )),
    )
}

async fn relying_party() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new().route("/callback", axum::routing::get(callback));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

fn query_of(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The authorization URL a console would send `verifier`'s browser to.
fn authorize_url(checkin: &Checkin, redirect: &str, state: &str, verifier: &str) -> String {
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&checkin.authorize_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid profile email eduperson_entitlement")
        .append_pair("state", state)
        .append_pair("nonce", &format!("nonce-{state}"))
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

/// Logs `user` in through the form; the query the relying party got.
async fn log_in(
    browser: &Browser,
    checkin: &Checkin,
    redirect: &str,
    state: &str,
    verifier: &str,
    (user, password): (&str, &str),
) -> HashMap<String, String> {
    browser
        .goto(&authorize_url(checkin, redirect, state, verifier))
        .await;
    browser.fill("#username", user).await;
    browser.fill("#password", password).await;
    browser.click("#login").await;
    browser
        .wait_for_text("#query", "code=", Duration::from_secs(10))
        .await;
    let url = browser.current_url().await;
    assert!(url.starts_with(redirect), "landed on {url}");
    query_of(&url)
}

async fn redeem(checkin: &Checkin, code: &str, redirect: &str, verifier: &str) -> Value {
    let r = reqwest::Client::new()
        .post(checkin.token_url())
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
    assert!(r.status().is_success(), "token endpoint: {}", r.status());
    r.json().await.unwrap()
}

/// The claims of an ID token, read as a client reads them (and its signature checked).
fn claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    assert_eq!(
        verify_id_token(id_token, SECRET).as_ref(),
        Some(&claims),
        "signed with the client secret"
    );
    claims
}

#[tokio::test]
async fn chromium_logs_in_with_the_checkin_form_and_the_code_redeems_with_pkce() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let checkin = Checkin::start().await;
    let (rp, _rp_task) = relying_party().await;
    let redirect = format!("{rp}/callback");
    checkin.add_client(CLIENT, SECRET, &[&redirect]);
    checkin.add_user(OidcUser::new("alice", "alice-pw"));
    checkin.add_user(
        OidcUser::new("bob", "bob-pw").with_entitlements(&[&entitlement("vo.other.eu", "member")]),
    );

    // A wrong password shows the form again, with an error.
    let verifier = "alice-verifier-0123456789-0123456789-0123456789";
    browser
        .goto(&authorize_url(&checkin, &redirect, "st-alice", verifier))
        .await;
    let shot = browser.screenshot("checkin-login").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", shot.display());
    browser.fill("#username", "alice").await;
    browser.fill("#password", "wrong").await;
    browser.click("#login").await;
    browser
        .wait_for_text(
            "#error",
            "Wrong username or password",
            Duration::from_secs(10),
        )
        .await;

    let q = log_in(
        &browser,
        &checkin,
        &redirect,
        "st-alice",
        verifier,
        ("alice", "alice-pw"),
    )
    .await;
    assert_eq!(q["state"], "st-alice");
    let tokens = redeem(&checkin, &q["code"], &redirect, verifier).await;
    let c = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(c["iss"], checkin.issuer());
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["nonce"], "nonce-st-alice");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["email"], "alice@example.org");
    let req = checkin.last_token_request().unwrap();
    assert_eq!(req.form["code_verifier"], verifier);
    let info: Value = reqwest::Client::new()
        .get(checkin.userinfo_url())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], c["sub"]);
    assert_eq!(
        info["eduperson_entitlement"][0],
        "urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu"
    );
    // The callback's cookie is alice's browser's: a second load sends it back.
    browser.goto(&format!("{rp}/callback?again=1")).await;
    browser
        .wait_for_text("#cookies", "rp_seen=yes", Duration::from_secs(5))
        .await;

    // A second user in a second browser: no cookie of the first.
    let second = browser.new_session().await;
    let verifier_b = "bob-verifier-0123456789-0123456789-0123456789-01";
    let q = log_in(
        &second,
        &checkin,
        &redirect,
        "st-bob",
        verifier_b,
        ("bob", "bob-pw"),
    )
    .await;
    assert_eq!(second.text("#cookies").await, "[]");
    let tokens = redeem(&checkin, &q["code"], &redirect, verifier_b).await;
    let c = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(c["preferred_username"], "bob");
    assert_eq!(c["nonce"], "nonce-st-bob");
    second.close().await;
    browser.close().await;
}
