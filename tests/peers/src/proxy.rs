//! A small HTTP proxy in front of a cloud peer (raw TCP, one connection per request)
//! that records each request and answers queued faults instead for the requests they
//! name. A request is named by its EC2 `Action` when it has one (moto), else by
//! `METHOD /path` without the query (OpenStack); a fault's name matches a request
//! whose name starts with it.
//!
//! [`Proxy::lag`] makes the cloud behind it eventually consistent and forgetful, as EC2
//! is and as an EC2-compatible endpoint or Nova can be: machines are missing from lists
//! (EC2 `DescribeInstances`, Nova `GET /servers/detail`) until they are older than a
//! given time, and EC2's `ClientToken` is dropped from `RunInstances`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy answers instead of forwarding.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An EC2 XML error with this HTTP status and code.
    Error(u16, &'static str),
    /// A JSON error body with this HTTP status (OpenStack's style).
    Json(u16, &'static str),
    /// A bare 503 with a non-XML body (a load balancer's).
    Bare503,
    /// No answer for this long, then a closed connection.
    Stall(Duration),
    /// Forward the request (moto acts on it), then hold the answer this long and close
    /// the connection without it: a client that crashes or times out after sending.
    ForwardThenStall(Duration),
}

/// A request seen.
struct Request {
    action: String,
    body: String,
    arrived: Instant,
    /// When its answer was sent back (None while pending, or for a stalled one).
    answered: Option<Instant>,
}

/// Requests seen, in order of arrival.
type Seen = Arc<Mutex<Vec<Request>>>;

/// Forwards to moto, one connection per request, recording each EC2 Action and its
/// parameters; answers queued faults instead for the actions they name.
pub struct Proxy {
    port: u16,
    actions: Seen,
    faults: Arc<Mutex<VecDeque<(&'static str, Fault)>>>,
    lag: Arc<Mutex<Option<Duration>>>,
    /// When the record was last cleared (what [`Proxy::timeline`] counts from).
    since: Mutex<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let actions = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let lag = Arc::new(Mutex::new(None));
        let (a, f, l) = (actions.clone(), faults.clone(), lag.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (a, f, l) = (a.clone(), f.clone(), l.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, a, f, l).await;
                });
            }
        });
        Self {
            port,
            actions,
            faults,
            lag,
            since: Mutex::new(Instant::now()),
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, machines are missing from lists until they are `hide` old, and
    /// `RunInstances` loses its `ClientToken`.
    pub fn lag(&self, hide: Duration) {
        *self.lag.lock().unwrap() = Some(hide);
    }

    /// Answer the next request for `action` with `fault`.
    pub fn fail(&self, action: &'static str, fault: Fault) {
        self.faults.lock().unwrap().push_back((action, fault));
    }

    pub fn count(&self, action: &str) -> usize {
        self.actions
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.action == action)
            .count()
    }

    /// The parameters of each `action` request seen, in order: the form body's
    /// `key=value` pairs as sent (EC2's query protocol).
    pub fn params(&self, action: &str) -> Vec<Vec<(String, String)>> {
        self.actions
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.action == action)
            .map(|r| {
                r.body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    pub fn total(&self) -> usize {
        self.actions.lock().unwrap().len()
    }

    pub fn reset(&self) {
        self.actions.lock().unwrap().clear();
        *self.since.lock().unwrap() = Instant::now();
    }

    /// Each request since the last [`Proxy::reset`] (or the start): when it arrived,
    /// counted from then, its name, and how long the answer took (None if none came).
    pub fn timeline(&self) -> Vec<(Duration, String, Option<Duration>)> {
        let since = *self.since.lock().unwrap();
        self.actions
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.arrived.saturating_duration_since(since),
                    r.action.clone(),
                    r.answered.map(|t| t.saturating_duration_since(r.arrived)),
                )
            })
            .collect()
    }

    pub fn summary(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.actions.lock().unwrap().iter() {
            *m.entry(r.action.clone()).or_default() += 1;
        }
        m
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Header lines without `Connection`, plus `Connection: close`, so neither side
/// reuses the connection.
fn close_headers(head: &str) -> String {
    let mut out: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    out.join("\r\n")
}

async fn serve(
    mut client: TcpStream,
    upstream: u16,
    actions: Seen,
    faults: Arc<Mutex<VecDeque<(&'static str, Fault)>>>,
    lag: Arc<Mutex<Option<Duration>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let lag = *lag.lock().unwrap();
    let (head, body) = match lag {
        Some(_) => drop_client_token(&head, &buf[head_end + 4..]),
        None => (head, buf[head_end + 4..].to_vec()),
    };
    let body = &body[..];
    let action = String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
        .unwrap_or_else(|| {
            let mut words = head.split(' ');
            let method = words.next().unwrap_or_default();
            let path = words.next().unwrap_or_default();
            format!("{method} {}", path.split('?').next().unwrap_or_default())
        });
    let arrived = Instant::now();
    let index = {
        let mut seen = actions.lock().unwrap();
        seen.push(Request {
            action: action.clone(),
            body: String::from_utf8_lossy(body).to_string(),
            arrived,
            answered: None,
        });
        seen.len() - 1
    };

    let fault = {
        let mut q = faults.lock().unwrap();
        let pos = q.iter().position(|(a, _)| action.starts_with(a));
        pos.and_then(|i| q.remove(i)).map(|(_, f)| f)
    };
    let response: Vec<u8> = match fault {
        Some(Fault::Error(status, code)) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{code}</Code><Message>injected by the kelp test proxy</Message>\
                 </Error></Errors><RequestID>kelp-test</RequestID></Response>"
            );
            format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: text/xml;charset=UTF-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            )
            .into_bytes()
        }
        Some(Fault::Json(status, json)) => format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        )
        .into_bytes(),
        Some(Fault::Bare503) => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
              Content-Length: 19\r\nConnection: close\r\n\r\nService Unavailable"
            .to_vec(),
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            return Ok(());
        }
        Some(Fault::ForwardThenStall(d)) => {
            forward(&head, body, upstream).await?;
            tokio::time::sleep(d).await;
            return Ok(());
        }
        None => {
            let answer = forward(&head, body, upstream).await?;
            match lag {
                Some(hide)
                    if action == "DescribeInstances" || action.ends_with("/servers/detail") =>
                {
                    hide_young(&answer, hide)
                }
                _ => answer,
            }
        }
    };
    client.write_all(&response).await?;
    // The record may have been cleared meanwhile.
    if let Some(r) = actions.lock().unwrap().get_mut(index)
        && r.arrived == arrived
    {
        r.answered = Some(Instant::now());
    }
    client.shutdown().await
}

/// Sends the request to moto and returns its answer (with `Connection: close`).
async fn forward(head: &str, body: &[u8], upstream: u16) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    let mut req = close_headers(head).into_bytes();
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    up.write_all(&req).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    Ok(match find(&resp, b"\r\n\r\n") {
        Some(i) => {
            let mut out = close_headers(&String::from_utf8_lossy(&resp[..i])).into_bytes();
            out.extend_from_slice(&resp[i..]);
            out
        }
        None => resp,
    })
}

/// `RunInstances` without its `ClientToken`, with the Content-Length fixed.
fn drop_client_token(head: &str, body: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(body);
    if !text.contains("Action=RunInstances") {
        return (head.to_string(), body.to_vec());
    }
    let kept: Vec<&str> = text
        .split('&')
        .filter(|kv| !kv.starts_with("ClientToken="))
        .collect();
    let body = kept.join("&").into_bytes();
    (with_length(head, body.len()), body)
}

fn with_length(head: &str, length: usize) -> String {
    head.split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {length}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// An answer listing machines, without those created less than `hide` ago: EC2
/// reservations whose `launchTime` is that recent, Nova servers whose `created` is.
fn hide_young(answer: &[u8], hide: Duration) -> Vec<u8> {
    let Some(i) = find(answer, b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let mut head = String::from_utf8_lossy(&answer[..i]).to_string();
    let mut body = String::from_utf8_lossy(&answer[i + 4..]).to_string();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
        head = head
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding:"))
            .chain(["Content-Length: 0"])
            .collect::<Vec<_>>()
            .join("\r\n");
    }
    let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::try_from(hide).unwrap_or_default();
    let young = |t: &str| {
        t.trim()
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t > cutoff)
    };
    let body = if body.trim_start().starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(mut v) => {
                if let Some(servers) = v["servers"].as_array_mut() {
                    servers.retain(|s| !s["created"].as_str().is_some_and(young));
                }
                v.to_string()
            }
            Err(_) => body,
        }
    } else {
        hide_young_reservations(&body, &young)
    };
    let mut out = with_length(&head, body.len()).into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// DescribeInstances XML without the `reservationSet` items that hold a young instance.
fn hide_young_reservations(xml: &str, young: &dyn Fn(&str) -> bool) -> String {
    let Some(start) = xml.find("<reservationSet>") else {
        return xml.to_string();
    };
    let mut out = String::from(&xml[..start + "<reservationSet>".len()]);
    let mut rest = &xml[start + "<reservationSet>".len()..];
    while let Some(open) = rest.find("<item>") {
        let close_set = rest.find("</reservationSet>").unwrap_or(rest.len());
        if close_set < open {
            break;
        }
        out.push_str(&rest[..open]);
        // The matching </item>, counting nested items.
        let mut depth = 0;
        let mut j = open;
        let end = loop {
            let next_open = rest[j..].find("<item>").map(|k| j + k);
            let next_close = rest[j..].find("</item>").map(|k| j + k);
            match (next_open, next_close) {
                (Some(o), Some(c)) if o < c => {
                    depth += 1;
                    j = o + "<item>".len();
                }
                (_, Some(c)) => {
                    depth -= 1;
                    j = c + "</item>".len();
                    if depth == 0 {
                        break j;
                    }
                }
                _ => break rest.len(),
            }
        };
        let item = &rest[open..end];
        let hidden = item
            .split("<launchTime>")
            .skip(1)
            .filter_map(|p| p.split("</launchTime>").next())
            .any(young);
        if !hidden {
            out.push_str(item);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A chunked body's data.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}
