//! A real browser for the console's tests: Debian's headless `chromium` driven over
//! WebDriver by `chromedriver`, both on 127.0.0.1.
//!
//! [`Browser::start`] returns None (and prints `skipped: ...`) when either binary is
//! missing, unless `KELP_REQUIRE_BROWSER=1` (CI), where a missing browser is a failure.
//! Each [`Browser`] is its own profile (cookies, storage); [`Browser::new_session`] opens
//! another one on the same chromedriver, for a second user.
//!
//! `KELP_CHROMIUM` and `KELP_CHROMEDRIVER` name other binaries than `chromium` and
//! `chromedriver` on PATH (or in /usr/bin).
//!
//! Screenshots go to `$KELP_ARTIFACTS/console/` (else `$CARGO_TARGET_DIR/artifacts/console/`,
//! else the workspace's `target/artifacts/console/`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long element look-ups wait for the element to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The chromedriver process, killed (with the browsers it started) when the last
/// session using it is dropped.
struct Driver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group; the browsers it started are in it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One browser session (one profile) on headless chromium.
pub struct Browser {
    client: Client,
    session: Option<String>,
    profile: PathBuf,
    driver: Arc<Driver>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (chromedriver then quits its chromium) without an async
        // runtime: fantoccini's own close needs one, and a test may be unwinding.
        if let Some(id) = &self.session {
            let _ = http_request(self.driver.port, "DELETE", &format!("/session/{id}"));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `$<env>` when set (a path, which must exist), else `name` on PATH, else `fallback`.
fn find_binary(env: &str, name: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from(fallback)).filter(|p| p.is_file()))
}

fn chromium() -> Option<PathBuf> {
    find_binary("KELP_CHROMIUM", "chromium", "/usr/bin/chromium")
}

fn chromedriver() -> Option<PathBuf> {
    find_binary("KELP_CHROMEDRIVER", "chromedriver", "/usr/bin/chromedriver")
}

fn required() -> bool {
    std::env::var("KELP_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("{prefix}-{}-{nanos:x}", std::process::id()))
}

/// A blocking HTTP/1.1 request to chromedriver (which refuses HTTP/1.0 and keeps the
/// connection open): the status line, headers and body.
fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length || n == 0 {
                return Ok(text.into_owned());
            }
        }
        if n == 0 {
            return Ok(text.into_owned());
        }
    }
}

/// Where screenshots go.
pub fn artifacts_dir() -> PathBuf {
    let base = std::env::var_os("KELP_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("artifacts"))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"));
    base.join("console")
}

impl Browser {
    /// chromedriver on a free port and a first headless chromium session, or None
    /// (printing `skipped: ...`) when either is not installed and `KELP_REQUIRE_BROWSER`
    /// is not 1.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (chromium(), chromedriver()) else {
            let why = "chromium or chromedriver is not installed \
                       (apt-get install chromium chromium-driver)";
            if required() {
                panic!("a browser is required (KELP_REQUIRE_BROWSER=1) but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let port = free_port();
        let dir = unique("kelp-chromedriver");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("chromedriver.log");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let driver = Arc::new(Driver { child, port, dir });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_request(port, "GET", "/status") {
                Ok(r) if r.starts_with("HTTP/1.") && r.contains("\"ready\"") => break,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on 127.0.0.1:{port}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Self::open(driver, &chromium).await)
    }

    async fn open(driver: Arc<Driver>, chromium: &Path) -> Browser {
        let profile = unique("kelp-chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-gpu".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
            // Tests talk to 127.0.0.1 only: no calls home, no updates, no other hosts.
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--no-pings".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start chromium: {e}; its log:\n{}",
                    std::fs::read_to_string(driver.dir.join("chromedriver.log"))
                        .unwrap_or_default()
                )
            });
        let session = client.session_id().await.ok().flatten();
        Browser {
            client,
            session,
            profile,
            driver,
        }
    }

    /// Another browser on the same chromedriver, with its own profile: separate cookies,
    /// a second user.
    pub async fn new_session(&self) -> Browser {
        let chromium = chromium().expect("chromium was there when the first session started");
        Self::open(self.driver.clone(), &chromium).await
    }

    /// The WebDriver client, for whatever the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(FIND_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "no element matches {css:?} on {} within {FIND_TIMEOUT:?} ({e}); the page:\n{}",
                self.current_url().await,
                self.source().await
            ),
        }
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("typing into {css:?}: {err}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css:?}: {e}"));
    }

    /// The visible text of the element matching `css` (waiting for it to appear).
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The text of the element matching `css` now, or None when there is none.
    pub async fn try_text(&self, css: &str) -> Option<String> {
        let e = self.client.find(Locator::Css(css)).await.ok()?;
        e.text().await.ok()
    }

    /// Polls until the element matching `css` shows `needle`; its text then.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.try_text(css).await;
            if let Some(t) = &text
                && t.contains(needle)
            {
                return t.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{css:?} did not show {needle:?} within {timeout:?} on {} (it shows {text:?}); the page:\n{}",
                    self.current_url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window as `<artifacts>/console/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Ends the session now (dropping does it too).
    pub async fn close(mut self) {
        if self.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }
}
