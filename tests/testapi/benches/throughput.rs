//! Creates per second and watch fan-out of the test server, as ratios against a
//! baseline measured in the same run (a bare /healthz round trip).
//!
//! Run: `cargo bench -p kelp-testapi --bench throughput` (figures only, no asserts).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kelp_testapi::TestApiServer;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};

const OBJECTS: usize = 1_000;
const WATCHERS: usize = 10;

fn cm(name: String) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
        .unwrap()
}

async fn client(server: &TestApiServer) -> Client {
    let mut config = Config::new(server.url().parse().unwrap());
    config.root_cert = Some(vec![server.ca_der().to_vec()]);
    config.auth_info.token = Some(server.admin_token().to_string().into());
    config.default_namespace = "default".into();
    Client::try_from(config).unwrap()
}

async fn baseline(client: &Client, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let req = http::Request::get("/healthz").body(Vec::new()).unwrap();
        client.request_text(req).await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn creates(api: &Api<ConfigMap>, prefix: &str, n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        api.create(&PostParams::default(), &cm(format!("{prefix}-{i}")))
            .await
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = TestApiServer::start().await.unwrap();
    let client = client(&server).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let base = baseline(&client, OBJECTS).await;
    let plain = creates(&api, "plain", OBJECTS).await;

    // Fan-out: WATCHERS watches from the current resourceVersion, then OBJECTS creates.
    let rv = api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .unwrap();
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while seen < OBJECTS {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(_))) => seen += 1,
                    Ok(Some(_)) => {}
                    other => panic!("watch ended early: {other:?}"),
                }
            }
            Instant::now()
        }));
    }
    let start = Instant::now();
    let watched = creates(&api, "watched", OBJECTS).await;
    let mut last = start;
    for w in watchers {
        last = last.max(
            tokio::time::timeout(Duration::from_secs(300), w)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let fanout_secs = last.duration_since(start).as_secs_f64();
    let delivered = (OBJECTS * WATCHERS) as f64 / fanout_secs;

    println!("kelp-testapi throughput ({OBJECTS} objects, {WATCHERS} watchers)");
    println!("  baseline /healthz round trips : {base:>10.0} req/s (1.00)");
    println!(
        "  creates, no watchers          : {plain:>10.0} /s    ({:.2} of baseline)",
        plain / base
    );
    println!(
        "  creates, {WATCHERS} watchers          : {watched:>10.0} /s    ({:.2} of creates without watchers)",
        watched / plain
    );
    println!(
        "  watch events delivered        : {delivered:>10.0} /s    ({:.2} x creates without watchers)",
        delivered / plain
    );
    println!("  all {WATCHERS} watchers caught up after {fanout_secs:.2}s");
    server.shutdown().await;
}
