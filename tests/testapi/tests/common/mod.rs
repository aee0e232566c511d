//! Shared set-up: a server on 127.0.0.1 and a kube client for it.
#![allow(dead_code)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kelp_testapi::TestApiServer;
use kube::api::{Api, PostParams};
use kube::{Client, Config};

pub async fn server() -> (TestApiServer, Client) {
    server_with(kelp_testapi::Config::default()).await
}

pub async fn server_with(config: kelp_testapi::Config) -> (TestApiServer, Client) {
    let server = TestApiServer::start_with(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = client_for(&server);
    (server, client)
}

pub fn client_for(server: &TestApiServer) -> Client {
    let mut config = Config::new(server.url().parse().unwrap());
    config.root_cert = Some(vec![server.ca_der().to_vec()]);
    config.default_namespace = "default".into();
    config.auth_info.token = Some(server.admin_token().to_string().into());
    Client::try_from(config).unwrap()
}

/// Installs kelp's CRDs, as `kubectl apply -f crds/` would.
pub async fn install_kelp_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kelp_crds::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
}

/// A raw request; returns (status code, headers, body text).
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub fn api_code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn api_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}
