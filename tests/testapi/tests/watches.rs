//! Lists and watches as kube-runtime uses them.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn names(list: &[ConfigMap]) -> Vec<String> {
    list.iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_select_by_labels_and_fields_and_page() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (name, labels) in [
        ("a", json!({"tier": "gpu", "zone": "x"})),
        ("b", json!({"tier": "cpu", "zone": "y"})),
        ("c", json!({"tier": "gpu"})),
        ("d", json!({})),
    ] {
        cms.create(&PostParams::default(), &cm(name, labels))
            .await
            .unwrap();
    }
    let sel = |s: &str| ListParams::default().labels(s);
    let cases = [
        ("tier=gpu", vec!["a", "c"]),
        ("tier==gpu", vec!["a", "c"]),
        ("tier!=gpu", vec!["b", "d"]),
        ("tier in (gpu,cpu)", vec!["a", "b", "c"]),
        ("tier notin (gpu)", vec!["b", "d"]),
        ("zone", vec!["a", "b"]),
        ("!zone", vec!["c", "d"]),
        ("tier=gpu,zone=x", vec!["a"]),
    ];
    for (s, expected) in cases {
        assert_eq!(
            names(&cms.list(&sel(s)).await.unwrap().items),
            expected,
            "{s}"
        );
    }
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(names(&by_name.items), ["b"]);
    let all: Api<ConfigMap> = Api::all(client.clone());
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(by_ns.items.len(), 4);

    let page1 = cms.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&page1.items), ["a", "b", "c"]);
    let token = page1.metadata.continue_.clone().unwrap();
    assert_eq!(page1.metadata.remaining_item_count, Some(1));
    let page2 = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&page2.items), ["d"]);
    assert!(page2.metadata.continue_.is_none());

    // Every page carries the first page's resourceVersion: a change made while paging
    // (to an object already listed) is what a watch from it starts with.
    let page1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let rv = page1.metadata.resource_version.clone().unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed while paging"}})),
    )
    .await
    .unwrap();
    let page2 = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page1.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&page2.items), ["c", "d"]);
    assert_eq!(
        page2.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let mut events = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(c)) => assert_eq!(c.metadata.name.as_deref(), Some("a")),
        other => panic!("expected the change made while paging, got {other:?}"),
    }

    let any = cms.list(&ListParams::default().match_any()).await.unwrap();
    assert_eq!(any.items.len(), 4, "resourceVersion=0");
    assert!(any.metadata.resource_version.is_some());
}

#[tokio::test]
async fn watches_resume_from_a_resource_version_and_expire() {
    let (_s, client) = server_with(kelp_testapi::Config {
        history: 5,
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let first = cms
        .create(&PostParams::default(), &cm("w0", json!({})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("w1", json!({})))
        .await
        .unwrap();
    cms.delete("w0", &DeleteParams::default()).await.unwrap();

    let stream = cms
        .watch(&WatchParams::default().timeout(2), &rv0)
        .await
        .unwrap();
    let events: Vec<_> = stream.try_collect().await.unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ADDED w1", "DELETED w0"],
        "only events after the requested version"
    );

    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("x{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &rv0)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    // The next page of a list whose changes since its first page are forgotten.
    let page1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    for i in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("y{i}"), json!({})))
            .await
            .unwrap();
    }
    let token = page1.metadata.continue_.unwrap();
    match cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_send_bookmarks_and_close_at_the_timeout() {
    let (_s, client) = server_with(kelp_testapi::Config {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    // Ends by itself: try_collect returns only when the server closes the stream.
    let events: Vec<_> = stream.try_collect().await.unwrap();
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn label_selected_watches_see_objects_enter_and_leave() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("m", json!({"pick": "no"})))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let patch = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"pick": v}}}));
    cms.patch("m", &PatchParams::default(), &patch("yes"))
        .await
        .unwrap();
    cms.patch("m", &PatchParams::default(), &patch("yes"))
        .await
        .unwrap();
    cms.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.patch("m", &PatchParams::default(), &patch("no"))
        .await
        .unwrap();
    let stream = cms
        .watch(&WatchParams::default().labels("pick=yes").timeout(1), &rv)
        .await
        .unwrap();
    let kinds: Vec<&str> = stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "OTHER",
        })
        .collect();
    assert_eq!(
        kinds,
        ["ADDED", "MODIFIED", "DELETED"],
        "the no-op patch makes no event"
    );
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));
    cms.create(&PostParams::default(), &cm("after", json!({})))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.metadata.name.as_deref(), Some("after"));

    // The streaming-list mode (sendInitialEvents) works too.
    let cfg = watcher::Config::default().streaming_lists();
    let mut stream = watcher(cms.clone(), cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let o = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(o.metadata.name.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["after", "before"]);
}

#[tokio::test]
async fn metadata_lists_gets_and_watches_carry_no_data() {
    let (_s, client) = server().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client.clone());
    let secret = |name: &str| -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"a": "b"}}, "stringData": {"token": "s3cret"}})).unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret("one"))
        .await
        .unwrap();
    let list = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let one = &list.items[0];
    assert_eq!(one.metadata.name.as_deref(), Some("one"));
    assert_eq!(one.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    let got = secrets.get_metadata("one").await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["a"], "b");

    // The raw answers: no data, under meta.k8s.io/v1.
    let raw = client
        .request_text(
            http::Request::get("/api/v1/namespaces/default/secrets")
                .header(
                    "accept",
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(raw.contains("\"PartialObjectMetadataList\""), "{raw}");
    assert!(
        !raw.contains("s3cret") && !raw.contains("czNjcmV0"),
        "{raw}"
    );

    // A metadata watcher sees the initial object and a later one, without their data.
    let meta: Api<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>> =
        Api::default_namespaced(client.clone());
    let mut events = watcher(meta, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("one"));
    secrets
        .create(&PostParams::default(), &secret("two"))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.metadata.name.as_deref(), Some("two"));
    assert_eq!(second.types.unwrap().api_version, "meta.k8s.io/v1");
}
