//! `kelp console` end to end, as a researcher uses it: a real `kelp dev` with logins
//! through the Check-in stand-in, driven by headless chromium over WebDriver. The
//! dashboard's "deploy on your own cloud" link, login, the prefilled form, the price,
//! deploy on the sim cloud, Ready without a reload, the endpoint link, delete; a second
//! user who cannot see the first one's Deployment; a user of another VO refused; TOSCA
//! upload; forged CSRF tokens and unknown sessions refused; credentials in no page and
//! no log. Screenshots of each page go to the artifacts folder. Skips without chromium
//! unless `KELP_REQUIRE_BROWSER=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::browser::Browser;
use kelp_test_peers::oidc::{Checkin, OidcUser, entitlement};
use serde_json::Value;

const CLIENT: &str = "kelp-console";
const CLIENT_SECRET: &str = "console-client-secret-81f3";
/// Typed into the deploy form; must appear in no page and no log.
const NEXTCLOUD_PASSWORD: &str = "alice-nextcloud-app-password-5Qx9";
const WAIT: Duration = Duration::from_secs(120);

/// A running `kelp dev` with OIDC logins, in its own directory; killed on drop.
struct Dev {
    child: Child,
    dir: PathBuf,
    console: String,
}

impl Dev {
    async fn start(issuer: &str) -> Dev {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("kelp-console-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["dev", "--port", "0", "--console-listen", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(dir.join("kc"))
            .args(["--oidc-issuer", issuer, "--oidc-client-id", CLIENT])
            .args(["--allowed-vo", "vo.imagine-ai.eu"])
            .env("KELP_OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .env_remove("KUBECONFIG")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("kelp dev starts");
        let mut dev = Dev {
            child,
            dir,
            console: String::new(),
        };
        let start = Instant::now();
        loop {
            let out = std::fs::read_to_string(dev.dir.join("stdout")).unwrap_or_default();
            if let Some(url) = out.lines().find_map(|l| l.strip_prefix("Web console: ")) {
                dev.console = url.trim().to_string();
                break;
            }
            if start.elapsed() > WAIT || dev.child.try_wait().unwrap().is_some() {
                panic!("kelp dev did not print its console URL:\n{}", dev.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dev
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kc"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.console)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` until it gives `Some`, for at most [`WAIT`].
async fn until<T>(what: &str, dev: &Dev, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!(
                "timed out waiting for {what}; kelp dev's log:\n{}",
                dev.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Logs in on the Check-in stand-in's form, the browser being on it.
async fn log_in(b: &Browser, user: &str, password: &str) {
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
}

/// The value of an input.
async fn value(b: &Browser, css: &str) -> String {
    let e = b
        .client()
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.prop("value").await.unwrap().unwrap_or_default()
}

/// Selects an option of a select by value.
async fn select(b: &Browser, css: &str, v: &str) {
    let e = b
        .client()
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap();
    e.select_by_value(v).await.unwrap();
}

/// Clicks an element of a live part of a page, which an update may replace between
/// finding and clicking it: found again then.
async fn click_live(b: &Browser, css: &str) {
    for _ in 0..20 {
        if let Ok(e) = b.client().find(fantoccini::Locator::Css(css)).await
            && e.click().await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not click {css}");
}

/// The session cookie of a browser.
async fn session_cookie(b: &Browser) -> String {
    let cookies = b.client().get_all_cookies().await.unwrap();
    let c = cookies
        .iter()
        .find(|c| c.name() == "kelp_session")
        .expect("a session cookie");
    assert_eq!(c.http_only(), Some(true), "the session cookie is HttpOnly");
    assert_eq!(c.secure(), Some(true), "the session cookie is Secure");
    assert_eq!(
        format!("{:?}", c.same_site()),
        "Some(Lax)",
        "the session cookie is SameSite=Lax"
    );
    c.value().to_string()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_goes_from_the_dashboard_link_to_a_ready_endpoint_in_a_browser() {
    let Some(alice_b) = Browser::start().await else {
        return;
    };
    let idp = Checkin::start().await;
    let alice = OidcUser::new("alice", "alice-pw");
    let bob = OidcUser::new("bob", "bob-pw");
    let eve =
        OidcUser::new("eve", "eve-pw").with_entitlements(&[&entitlement("vo.other.eu", "member")]);
    for u in [&alice, &bob, &eve] {
        idp.add_user(u.clone());
    }
    let dev = Dev::start(&idp.issuer()).await;
    idp.add_client(CLIENT, CLIENT_SECRET, &[&dev.url("/callback")]);
    let mut pages = Vec::new();

    // 1. The dashboard's link, with only its host changed, sends alice to log in and back.
    let link = dev.url(
        "/configure?selected_tosca=simple-node-disk.yml&childs=ai4eoscvm.yaml&ai4eosc_model_image=ai4os-yolov8-torch",
    );
    alice_b.goto(&link).await;
    alice_b.wait_for_text("#login", "", WAIT).await;
    alice_b.screenshot("01-login").await;
    log_in(&alice_b, "alice", "alice-pw").await;
    let from = alice_b
        .wait_for_text("#from-link", "deploy on your own cloud", WAIT)
        .await;
    assert!(from.contains("simple-node-disk.yml"), "{from}");
    assert!(
        alice_b.current_url().await.contains("/configure?"),
        "back on the link's page"
    );
    // The Module for the image is made on submit; the form has the templates' defaults.
    let new_module = alice_b.text("#module-new").await;
    assert!(
        new_module.contains("ai4oshub/ai4os-yolov8-torch"),
        "{new_module}"
    );
    assert_eq!(value(&alice_b, "#cpu").await, "2", "num_cpus' default");
    assert_eq!(
        value(&alice_b, "#memory_gb").await,
        "4",
        "mem_size's default, 4 GB"
    );
    assert_eq!(value(&alice_b, "#gpu").await, "0", "num_gpus' default");
    let ns = alice_b.text("#namespace").await;
    assert!(
        ns.starts_with("kelp-u-alice-"),
        "alice's own namespace: {ns}"
    );
    alice_b
        .screenshot("02-deploy-form-from-the-dashboard-link")
        .await;
    pages.push(alice_b.source().await);

    // 2. A new sim Cluster with one GPU, a Nextcloud folder; the price first.
    alice_b.click("#target-new").await;
    select(&alice_b, "#cloud", "sim").await;
    alice_b.fill("#gpu", "1").await;
    alice_b.fill("#gpu_model", "T4").await;
    alice_b
        .fill(
            "#storage_url",
            "https://share.example.org/remote.php/dav/files/alice",
        )
        .await;
    alice_b.fill("#storage_user", "alice").await;
    alice_b.fill("#storage_password", NEXTCLOUD_PASSWORD).await;
    alice_b.click("#preview").await;
    let plan = alice_b.wait_for_text("#plan", "per hour", WAIT).await;
    assert!(
        plan.contains("sim.t4"),
        "the T4 type kelp plan picks: {plan}"
    );
    assert!(plan.contains("$"), "a price: {plan}");
    assert!(alice_b.text("#reenter").await.contains("type them again"));
    assert_eq!(
        value(&alice_b, "#storage_password").await,
        "",
        "never sent back"
    );
    alice_b.screenshot("03-price-preview").await;
    pages.push(alice_b.source().await);
    alice_b.fill("#storage_password", NEXTCLOUD_PASSWORD).await;
    let name = value(&alice_b, "#name").await;
    assert_eq!(name, "ai4os-yolov8-torch");
    alice_b.click("#deploy").await;

    // 3. The detail page turns Ready by itself: the marker set now survives (no reload).
    alice_b
        .wait_for_text("h1", &format!("Deployment {name}"), WAIT)
        .await;
    alice_b
        .client()
        .execute("window.kelpNoReload = 42;", vec![])
        .await
        .unwrap();
    alice_b.wait_for_text("#phase", "Ready", WAIT).await;
    let marker = alice_b
        .client()
        .execute("return window.kelpNoReload;", vec![])
        .await
        .unwrap();
    assert_eq!(
        marker,
        serde_json::json!(42),
        "Ready arrived without a reload"
    );
    let endpoint = alice_b.text("#endpoint").await;
    let dep = dev
        .json(&["get", "kdep", &name, "-n", &ns])
        .expect("the Deployment exists");
    assert_eq!(dep["status"]["endpoint"].as_str(), Some(endpoint.as_str()));
    assert_eq!(
        dep["spec"]["storage"][0]["webdav"]["credentialsSecretRef"]["name"],
        format!("{name}-storage")
    );
    assert!(
        alice_b.text("#price").await.contains("$"),
        "the price per hour"
    );
    alice_b.wait_for_text("#events", "Ready", WAIT).await;
    alice_b
        .wait_for_text("#conditions", "Available", WAIT)
        .await;
    alice_b.screenshot("04-deployment-ready").await;
    pages.push(alice_b.source().await);
    let secret = dev
        .json(&["get", "secret", &format!("{name}-storage"), "-n", &ns])
        .unwrap();
    assert_eq!(
        secret["metadata"]["annotations"]["kelp.imagine-ai.eu/console-created-for"],
        name
    );
    let module = dev
        .json(&["get", "kmod", "ai4os-yolov8-torch", "-n", &ns])
        .unwrap();
    assert_eq!(
        module["spec"]["image"]["repository"],
        "ai4oshub/ai4os-yolov8-torch"
    );

    // The list is live too.
    alice_b.goto(&dev.url("/deployments")).await;
    alice_b
        .wait_for_text(&format!("#dep-{name} .phase"), "Ready", WAIT)
        .await;
    alice_b.screenshot("05-deployments").await;
    alice_b.goto(&dev.url("/modules")).await;
    alice_b
        .wait_for_text("#module-ai4os-yolov8-torch", "Deploy", WAIT)
        .await;
    alice_b.screenshot("06-modules").await;

    // 4. The endpoint link opens the endpoint (the sim's addresses serve nothing; the
    // browser is sent there all the same).
    alice_b
        .goto(&dev.url(&format!("/deployments/{name}")))
        .await;
    click_live(&alice_b, "#endpoint").await;
    let start = Instant::now();
    while !alice_b.current_url().await.starts_with(&endpoint) {
        assert!(
            start.elapsed() < WAIT,
            "the endpoint link did not open {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 5. Bob, in another browser session, sees none of it, and the API server agrees.
    let bob_b = alice_b.new_session().await;
    bob_b.goto(&dev.url("/deployments")).await;
    log_in(&bob_b, "bob", "bob-pw").await;
    bob_b
        .wait_for_text("#deployments", "No Deployments", WAIT)
        .await;
    let bob_ns = bob_b.text("#namespace").await;
    assert_ne!(bob_ns, ns);
    assert!(
        !bob_b.source().await.contains(&name),
        "bob sees alice's Deployment"
    );
    bob_b.goto(&dev.url(&format!("/deployments/{name}"))).await;
    bob_b.wait_for_text("#error", "no Deployment", WAIT).await;
    let as_bob = dev.kubectl(&[
        "get",
        "kdep",
        "-n",
        &ns,
        "--as",
        &format!("oidc:{}", bob.sub),
        "--as-group",
        "oidc:vo:vo.imagine-ai.eu",
    ]);
    assert!(!as_bob.status.success(), "bob may read alice's namespace");
    assert!(String::from_utf8_lossy(&as_bob.stderr).contains("forbidden"));
    let secrets_as_bob = dev.kubectl(&[
        "get",
        "secret",
        &format!("{name}-storage"),
        "-n",
        &ns,
        "--as",
        &format!("oidc:{}", bob.sub),
    ]);
    assert!(
        !secrets_as_bob.status.success(),
        "bob may read alice's credentials"
    );

    // 6. Bob imports a TOSCA template (the dashboard's two, on the sim cloud).
    bob_b.goto(&dev.url("/import")).await;
    let fixtures = repo().join("tests/fixtures/tosca");
    let file = bob_b
        .client()
        .find(fantoccini::Locator::Css("#template"))
        .await
        .unwrap();
    file.send_keys(fixtures.join("simple-node-disk.yml").to_str().unwrap())
        .await
        .unwrap();
    let child = bob_b
        .client()
        .find(fantoccini::Locator::Css("#child"))
        .await
        .unwrap();
    child
        .send_keys(fixtures.join("ai4eoscvm.yaml").to_str().unwrap())
        .await
        .unwrap();
    bob_b.fill("#inputs", "kelp.cloud=sim://").await;
    bob_b.click("#import").await;
    let yaml = bob_b.wait_for_text("#yaml", "kind: Deployment", WAIT).await;
    assert!(yaml.contains(&format!("namespace: {bob_ns}")), "{yaml}");
    bob_b.screenshot("07-tosca-import").await;
    bob_b.click("#apply").await;
    bob_b
        .wait_for_text("h1", "Deployment plants-classification", WAIT)
        .await;
    bob_b.wait_for_text("#phase", "Ready", WAIT).await;
    bob_b.screenshot("08-imported-deployment-ready").await;

    // 7. Eve's account is in another VO: refused, told which VOs the console serves.
    let eve_b = alice_b.new_session().await;
    eve_b.goto(&dev.url("/deployments")).await;
    log_in(&eve_b, "eve", "eve-pw").await;
    let refused = eve_b
        .wait_for_text("#error", "vo.imagine-ai.eu", WAIT)
        .await;
    assert!(refused.contains("enrol"), "{refused}");
    eve_b.screenshot("09-other-vo-refused").await;
    let eve_ns = kelp_operator::console::auth::user_namespace("kelp-", &eve.sub);
    assert!(
        dev.json(&["get", "ns", &eve_ns]).is_none(),
        "eve got a namespace"
    );

    // 8. Forged CSRF tokens and unknown sessions are refused.
    alice_b.goto(&dev.url("/deployments")).await;
    let cookie = session_cookie(&alice_b).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |path: &str, cookie: Option<String>, body: &str| {
        let mut r = http
            .post(dev.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(c) = cookie {
            r = r.header("cookie", format!("kelp_session={c}"));
        }
        r.send()
    };
    let forged = post(
        &format!("/deployments/{name}/delete"),
        Some(cookie.clone()),
        "_csrf=forged-token",
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 403);
    let none = post(&format!("/deployments/{name}/delete"), None, "_csrf=x")
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let unknown = post(
        &format!("/deployments/{name}/delete"),
        Some("no-such-session".into()),
        "_csrf=x",
    )
    .await
    .unwrap();
    assert_eq!(unknown.status(), 401);
    let get = http
        .get(dev.url("/deployments"))
        .header("cookie", "kelp_session=no-such-session")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 303, "a page without a session goes to log in");
    assert!(
        dev.json(&["get", "kdep", &name, "-n", &ns]).is_some(),
        "nothing was deleted"
    );

    // 9. Alice deletes: the page says what goes, and it goes.
    alice_b
        .goto(&dev.url(&format!("/deployments/{name}")))
        .await;
    let says = alice_b.text("#delete-form").await;
    assert!(
        says.contains(&format!("Cluster {name}")) && says.contains("machine"),
        "{says}"
    );
    alice_b.screenshot("10-delete").await;
    alice_b.click("#delete").await;
    alice_b
        .wait_for_text("#error", "kelp is removing", WAIT)
        .await;
    until("alice's Deployment and Cluster to go", &dev, || {
        (dev.json(&["get", "kdep", &name, "-n", &ns]).is_none()
            && dev.json(&["get", "kcl", &name, "-n", &ns]).is_none())
        .then_some(())
    })
    .await;
    assert!(
        dev.json(&["get", "secret", &format!("{name}-storage"), "-n", &ns])
            .is_none()
    );

    // 10. The credential typed in is in no page and no log.
    let log = dev.log();
    for (i, p) in pages.iter().enumerate() {
        assert!(
            !p.contains(NEXTCLOUD_PASSWORD),
            "page {i} shows the password"
        );
    }
    assert!(
        !log.contains(NEXTCLOUD_PASSWORD),
        "kelp dev logged the password"
    );
    assert!(
        !log.contains(CLIENT_SECRET),
        "kelp dev logged the client secret"
    );
    assert!(log.contains("console login"), "{log}");
}

/// The value of cookie `name` in a response's `Set-Cookie` headers.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Logs in without a browser, the way one does: the console's /login, the provider's
/// form (its hidden fields sent back), the callback with the login cookie. Returns the
/// session cookie.
async fn http_login(http: &reqwest::Client, console: &str, user: &str, password: &str) -> String {
    let r = http
        .get(format!("{console}/login?return_to=/deployments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let login_cookie = set_cookie(&r, "kelp_login").expect("a login cookie");
    let authorize = location(&r);
    let form = http
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hidden =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
    let mut fields: Vec<(String, String)> = hidden
        .captures_iter(&form)
        .map(|c| (c[1].to_string(), unescape(&c[2])))
        .collect();
    fields.push(("username".into(), user.into()));
    fields.push(("password".into(), password.into()));
    let base = authorize.split("/authorize").next().unwrap();
    let r = http
        .post(format!("{base}/authorize"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let callback = location(&r);
    let r = http
        .get(&callback)
        .header("cookie", format!("kelp_login={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/deployments");
    set_cookie(&r, "kelp_session").expect("a session cookie")
}

/// The CSRF token of a page.
fn csrf_of(html: &str) -> String {
    let re = regex::Regex::new(r#"name="_csrf" value="([^"]+)""#).unwrap();
    re.captures(html).expect("a CSRF token")[1].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_console_acts_as_the_user_with_an_account_that_may_only_impersonate() {
    use kelp_operator::console::{NamespaceMode, auth, rbac};
    let (server, admin) = common::process::api_server(&["kelp-system"]).await;
    for doc in rbac::cluster_roles() {
        kelp_operator::dev::apply_manifest(&admin, "default", "test", &doc)
            .await
            .unwrap();
    }
    common::process::apply(
        &admin,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: kelp-console, namespace: kelp-system}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: kelp-console}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kelp-console}\n\
         subjects: [{kind: ServiceAccount, name: kelp-console, namespace: kelp-system}]\n",
    )
    .await;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/kelp-system/serviceaccounts/kelp-console/token")
        .header("content-type", "application/json")
        .body(
            br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#
                .to_vec(),
        )
        .unwrap();
    let out: Value = admin.request(req).await.unwrap();
    let kc = kelp_testapi::kubeconfig_for(
        &server.url(),
        server.ca_pem(),
        out["status"]["token"].as_str().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("kelp-console-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kc"), &kc).unwrap();

    let idp = Checkin::start().await;
    let alice = OidcUser::new("alice", "alice-pw");
    let carol = OidcUser::new("carol", "carol-pw");
    idp.add_user(alice.clone());
    idp.add_user(carol.clone());
    let port = common::process::free_port();
    let console = format!("http://127.0.0.1:{port}");
    idp.add_client(CLIENT, CLIENT_SECRET, &[&format!("{console}/callback")]);
    // The administrator gives alice her namespace; carol has none.
    let alice_user = auth::oidc_user(
        &alice.sub,
        &alice.name,
        &alice.entitlements,
        &[],
        NamespaceMode::User,
        "kelp-",
    )
    .unwrap();
    for doc in rbac::tenant(&alice_user, NamespaceMode::User) {
        kelp_operator::dev::apply_manifest(&admin, &alice_user.namespace, "test", &doc)
            .await
            .unwrap();
    }
    let ns = alice_user.namespace.clone();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["console", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(dir.join("kc"))
        .args(["--oidc-issuer", &idp.issuer(), "--oidc-client-id", CLIENT])
        .env("KELP_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = Instant::now();
    while http.get(format!("{console}/healthz")).send().await.is_err() {
        assert!(start.elapsed() < WAIT, "kelp console did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A callback this browser did not start is refused (login CSRF).
    let r = http
        .get(format!("{console}/callback?code=x&state=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("not started in this browser")
    );

    // Alice deploys on a new EC2 Cluster; only impersonation makes it hers.
    let session = http_login(&http, &console, "alice", "alice-pw").await;
    let get = |path: &str| {
        http.get(format!("{console}{path}"))
            .header("cookie", format!("kelp_session={session}"))
            .send()
    };
    let page = get("/deploy").await.unwrap().text().await.unwrap();
    assert!(
        !page.contains("Simulated cloud"),
        "no sim without --allow-sim"
    );
    let csrf = csrf_of(&page);
    let aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
    let form = [
        ("_csrf", csrf.as_str()),
        ("image", "ai4oshub/ai4os-yolov8-torch"),
        ("name", "fish"),
        ("target", "new"),
        ("cloud", "ec2"),
        ("ec2_region", "eu-west-1"),
        ("ec2_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
        ("ec2_secret_access_key", aws_secret),
        ("cpu", "4"),
        ("memory_gb", "8"),
        ("gpu", "1"),
        ("replicas", "1"),
    ];
    let r = http
        .post(format!("{console}/deploy/preview"))
        .header("cookie", format!("kelp_session={session}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let preview = r.text().await.unwrap();
    assert!(
        preview.contains("g4dn.2xlarge"),
        "kelp plan's EC2 choice for 5 vCPUs and a GPU: {preview}"
    );
    assert!(!preview.contains(aws_secret));
    let r = http
        .post(format!("{console}/deploy"))
        .header("cookie", format!("kelp_session={session}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/deployments/fish");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(admin.clone(), &ns);
    let s = secrets.get("fish-aws").await.unwrap();
    let fields: Vec<String> = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(fields.contains(&"kelp-console".to_string()), "{fields:?}");
    let owner = &s.metadata.owner_references.expect("the Cluster owns it")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Cluster", "fish")
    );
    let clusters: kube::Api<kelp_crds::Cluster> = kube::Api::namespaced(admin.clone(), &ns);
    let cluster = serde_json::to_string(&clusters.get("fish").await.unwrap()).unwrap();
    assert!(
        !cluster.contains(aws_secret),
        "the credential is only in the Secret"
    );
    let detail = get("/deployments/fish")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!detail.contains(aws_secret));

    // The sim cloud is refused where it is not offered, naming the field.
    let mut sim = form.to_vec();
    sim.retain(|(k, _)| *k != "cloud" && *k != "name");
    sim.push(("cloud", "sim"));
    sim.push(("name", "fish2"));
    let r = http
        .post(format!("{console}/deploy"))
        .header("cookie", format!("kelp_session={session}"))
        .form(&sim)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("does not offer the simulated cloud")
    );

    // Deleting with the Cluster: the credentials go once the Cluster is gone (the test
    // API server has no garbage collector; the console removes them itself).
    let csrf = csrf_of(&detail);
    assert!(
        detail.contains("fish-aws"),
        "the delete section names the Secret"
    );
    let r = http
        .post(format!("{console}/deployments/fish/delete"))
        .header("cookie", format!("kelp_session={session}"))
        .form(&[("_csrf", csrf.as_str()), ("with_cluster", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("the Cluster fish"));
    let start = Instant::now();
    while secrets.get_opt("fish-aws").await.unwrap().is_some() {
        assert!(
            start.elapsed() < WAIT,
            "the credentials outlived their Cluster"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(clusters.get_opt("fish").await.unwrap().is_none());

    // Carol has no namespace yet: told which, and who gives it.
    let carol_session = http_login(&http, &console, "carol", "carol-pw").await;
    let r = http
        .get(format!("{console}/deployments"))
        .header("cookie", format!("kelp_session={carol_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("kelp-u-carol-") && body.contains("administrator"),
        "{body}"
    );

    // The console's own account reads nothing by itself.
    let sa = kelp_operator::targets::client_from_kubeconfig(&kc)
        .await
        .unwrap();
    let as_console: kube::Api<kelp_crds::Deployment> = kube::Api::namespaced(sa, &ns);
    let e = as_console.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref ae) if ae.code == 403),
        "{e}"
    );

    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("console login"), "{log}");
    assert!(
        !log.contains(aws_secret),
        "the console logged the credential"
    );
    assert!(
        !log.contains(CLIENT_SECRET),
        "the console logged its client secret"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
