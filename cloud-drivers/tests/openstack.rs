//! The OpenStack and EGI drivers against the OpenStack peer (real Keystone, Nova with
//! the fake virt driver and Placement; Glance and Neutron stand-ins), started by
//! `tests/peers/openstack/peer.sh start`. Skipped with a note when it is not running,
//! unless KELP_REQUIRE_OPENSTACK is set (as in `.ci/run`).

use std::collections::BTreeMap;
use std::time::Duration;

use kelp_cloud_drivers::egi::{self, CheckinCredentials, EgiSettings, SiteCatalog};
use kelp_cloud_drivers::openstack::{
    OpenStackAuth, OpenStackDriver, OpenStackSettings, group_name, uid_tag,
};
use kelp_cloud_drivers::{
    CloudDriver, CloudError, CreateRequest, MachineState, Owner, Requirements, select, tags,
};
use kelp_test_peers::openstack::{Checkin, OsPeer};
use kelp_test_peers::proxy::{Fault, Proxy};

fn app_cred(peer: &OsPeer) -> OpenStackAuth {
    OpenStackAuth::ApplicationCredential {
        id: peer.var("OS_APP_CRED_ID"),
        secret: peer.var("OS_APP_CRED_SECRET"),
    }
}

fn password(peer: &OsPeer, pw: &str) -> OpenStackAuth {
    OpenStackAuth::Password {
        username: peer.var("OS_USERNAME"),
        password: pw.to_string(),
        project_name: peer.var("OS_PROJECT_NAME"),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
    }
}

fn driver(peer: &OsPeer, auth: OpenStackAuth) -> OpenStackDriver {
    OpenStackDriver::new(OpenStackSettings {
        network: Some("private".into()),
        ..OpenStackSettings::new(peer.auth_url(), auth)
    })
    .unwrap()
}

fn owner(uid: &str, pool: &str) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(tags::MANAGED_BY.to_string(), "kelp".to_string());
    t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
    t.insert(tags::POOL.to_string(), pool.to_string());
    t
}

fn request(uid: &str, flavor: &str, count: u32, key: &str) -> CreateRequest {
    let mut tags = owner(uid, "gpu");
    tags.insert(tags::CLUSTER.to_string(), "research/os-test".to_string());
    CreateRequest {
        count,
        instance_type: flavor.to_string(),
        image: None,
        user_data: "#cloud-config\nhostname: kelp-test\n".to_string(),
        owner: Owner::from_tags(&tags).expect("kelp tags"),
        name_prefix: "os-test-gpu".to_string(),
        idempotency_key: key.to_string(),
        disk_gb: None,
    }
}

/// Lists until every machine is running or failed (at most 120 s).
async fn settled(d: &OpenStackDriver, uid: &str, n: usize) -> Vec<kelp_cloud_drivers::Machine> {
    for _ in 0..240 {
        let ms = d.list(&owner(uid, "gpu")).await.unwrap();
        if ms.len() == n
            && ms
                .iter()
                .all(|m| matches!(m.state, MachineState::Running | MachineState::Failed))
        {
            return ms;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("servers of {uid} did not settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavors_give_gpu_facts_from_extra_specs_and_matching_picks_the_right_one() {
    let Some(peer) = OsPeer::get().await else {
        return;
    };
    let d = driver(&peer, app_cred(&peer));
    let types = d.instance_types().await.unwrap();
    let by = |n: &str| {
        types
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("no flavor {n}: {types:?}"))
    };
    let t4 = by("gpu.t4").gpu.clone().unwrap();
    assert_eq!(
        (
            t4.count,
            t4.vendor.as_str(),
            t4.model.as_str(),
            t4.memory_mb
        ),
        (1, "NVIDIA", "Tesla T4", 16384)
    );
    let a100 = by("gpu.a100x2").gpu.clone().unwrap();
    assert_eq!(
        (a100.count, a100.model.as_str(), a100.memory_mb),
        (2, "A100", 81920)
    );
    let v100 = by("gpu.v100-pci").gpu.clone().unwrap();
    assert_eq!(
        (v100.count, v100.vendor.as_str(), v100.model.as_str()),
        (1, "NVIDIA", "V100")
    );
    assert!(by("m1.small").gpu.is_none());
    assert_eq!((by("m1.large").vcpus, by("m1.large").memory_mb), (8, 16384));

    let want = |count: u32, model: Option<&str>, mem: Option<u64>| Requirements {
        gpu_count: count,
        gpu_model: model.map(str::to_string),
        gpu_memory_mb: mem,
        cpu: Some(4),
        ..Default::default()
    };
    // Two flavors look like one T4 (gpu.huge-t4 is the peer's "No valid host" flavor):
    // same size, no prices, so by name.
    let c: Vec<&str> = select::candidates(&types, &want(1, Some("T4"), None))
        .unwrap()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(c, ["gpu.huge-t4", "gpu.t4"]);
    assert_eq!(
        select::choose(&types, &want(2, None, Some(40000)))
            .unwrap()
            .name,
        "gpu.a100x2"
    );
    assert_eq!(
        select::choose(&types, &want(1, Some("V100"), None))
            .unwrap()
            .name,
        "gpu.v100-pci"
    );
    let cpu = Requirements {
        cpu: Some(2),
        memory_mb: Some(4000),
        ..Default::default()
    };
    assert_eq!(select::choose(&types, &cpu).unwrap().name, "m1.small");
    let err = select::choose(&types, &want(8, Some("H100"), None)).unwrap_err();
    assert!(err.to_string().contains("8 H100 GPUs"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_by_default_name_properties_and_id() {
    let Some(peer) = OsPeer::get().await else {
        return;
    };
    let d = driver(&peer, app_cred(&peer));
    let newest = peer.var("IMAGE_UBUNTU_2404_NEWEST_ID");
    assert_eq!(d.resolve_image(None).await.unwrap().id, newest);
    assert_eq!(
        d.resolve_image(Some("ubuntu-24.04")).await.unwrap().id,
        newest
    );
    let jammy = peer.var("IMAGE_UBUNTU_2204_ID");
    assert_eq!(
        d.resolve_image(Some("ubuntu-22.04")).await.unwrap().id,
        jammy
    );
    assert_eq!(
        d.resolve_image(Some("os_distro=ubuntu,os_version=22.04"))
            .await
            .unwrap()
            .id,
        jammy
    );
    assert_eq!(
        d.resolve_image(Some(&jammy)).await.unwrap().name,
        "ubuntu-22.04"
    );
    let e = d.resolve_image(Some("windows-95")).await.unwrap_err();
    assert!(
        matches!(e, CloudError::Invalid(ref m) if m.contains("windows-95")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_created_in_one_request_tagged_listed_and_deleted_leaving_nothing() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let proxy = Proxy::start(peer.nova_port()).await;
    let d = OpenStackDriver::new(OpenStackSettings {
        network: Some("private".into()),
        endpoint_overrides: [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into(),
        ..OpenStackSettings::new(peer.auth_url(), password(&peer, &peer.var("OS_PASSWORD")))
    })
    .unwrap();
    let uid = "0b5e1d2a-0000-4000-8000-000000000001";
    d.instance_types().await.unwrap();
    let req = request(uid, "gpu.t4", 3, "kelp-batch-one");
    let created = d.create(&req).await.unwrap();
    assert_eq!(created.len(), 3);
    assert_eq!(
        proxy.count("POST /v2.1/servers"),
        1,
        "one create request per batch"
    );
    // The same batch again (its answer lost) is adopted, not started twice.
    let again = d.create(&req).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(proxy.count("POST /v2.1/servers"), 1);

    let ms = settled(&d, uid, 3).await;
    assert!(
        ms.iter().all(|m| m.state == MachineState::Running),
        "{ms:?}"
    );
    for m in &ms {
        assert_eq!(m.instance_type, "gpu.t4");
        assert_eq!(m.tags[tags::CLUSTER_UID], uid);
        assert_eq!(m.tags[tags::POOL], "gpu");
        assert_eq!(m.tags[tags::CLUSTER], "research/os-test");
        assert_eq!(m.provider_id, format!("openstack:///{}", m.id));
        assert!(
            m.addresses
                .iter()
                .any(|a| a.kind == "InternalIP" && a.address.starts_with("10.")),
            "{m:?}"
        );
    }
    // What Nova holds: tags, metadata, user-data, the Cluster's security group.
    let servers = peer.servers(&project).await;
    assert_eq!(servers.len(), 3);
    for s in &servers {
        let tags: Vec<&str> = s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(tags.contains(&uid_tag(uid).as_str()), "{tags:?}");
        assert_eq!(s["metadata"]["kelp.imagine-ai.eu:pool"], "gpu");
        use base64::Engine as _;
        let ud = base64::engine::general_purpose::STANDARD
            .decode(
                s["OS-EXT-SRV-ATTR:user_data"]
                    .as_str()
                    .expect("user_data shown to the admin"),
            )
            .unwrap();
        assert_eq!(String::from_utf8(ud).unwrap(), req.user_data);
        assert_eq!(s["security_groups"][0]["name"], group_name(uid));
    }
    let groups = peer.extra_groups(&project).await;
    assert_eq!(groups.len(), 1);
    assert!(
        groups[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == &uid_tag(uid))
    );
    assert_eq!(
        peer.neutron("ports", &project).await.len(),
        3,
        "one port per server, made by Nova"
    );

    // Delete (one already gone is fine), then release what is not a machine.
    let ids: Vec<String> = ms.iter().map(|m| m.id.clone()).collect();
    d.delete(&ids[..1]).await.unwrap();
    d.delete(&ids).await.unwrap();
    for _ in 0..240 {
        if d.list(&owner(uid, "gpu")).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(d.list(&owner(uid, "gpu")).await.unwrap().is_empty());
    d.release(&owner(uid, "gpu")).await.unwrap();
    let left = peer.servers_left(&project).await;
    assert!(left.is_empty(), "servers left in Nova: {left:?}");
    assert!(
        peer.neutron("ports", &project).await.is_empty(),
        "Nova deleted its ports"
    );
    assert!(
        peer.extra_groups(&project).await.is_empty(),
        "the security group went with the Cluster"
    );
    assert!(peer.neutron("floatingips", &project).await.is_empty());
    let calls = d.calls().snapshot();
    assert_eq!(calls["compute POST /servers"], 1, "{calls:?}");
    assert_eq!(calls["compute DELETE /servers/{id}"], 4, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_host_fails_the_servers_and_then_the_flavor_reports_no_capacity() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let d = driver(&peer, app_cred(&peer));
    let uid = "0b5e1d2a-0000-4000-8000-000000000002";
    d.create(&request(uid, "gpu.huge-t4", 1, "kelp-huge"))
        .await
        .unwrap();
    let ms = settled(&d, uid, 1).await;
    assert_eq!(ms[0].state, MachineState::Failed);
    let before = d.calls().snapshot().get("compute POST /servers").copied();
    let e = d
        .create(&request(uid, "gpu.huge-t4", 1, "kelp-huge-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CloudError::InsufficientCapacity { ref instance_type, .. } if instance_type == "gpu.huge-t4"),
        "{e}"
    );
    assert_eq!(
        d.calls().snapshot().get("compute POST /servers").copied(),
        before,
        "no request for a flavor known to be full"
    );
    // Another flavor still works.
    assert_eq!(
        d.create(&request(uid, "m1.small", 1, "kelp-small"))
            .await
            .unwrap()
            .len(),
        1
    );
    let ids: Vec<String> = d
        .list(&owner(uid, "gpu"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    d.delete(&ids).await.unwrap();
    peer.purge(&project).await;
    d.release(&owner(uid, "gpu")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_bounded() {
    let Some(peer) = OsPeer::get().await else {
        return;
    };
    let _lock = peer.lock().await;
    peer.purge(&peer.var("OS_PROJECT_ID")).await;
    // Wrong password: Unauthorized, naming Keystone.
    let e = driver(&peer, password(&peer, "wrong"))
        .instance_types()
        .await
        .unwrap_err();
    assert!(
        matches!(e, CloudError::Unauthorized(ref m) if m.contains("127.0.0.1:5001")),
        "{e}"
    );
    // Unreachable auth URL: reported, retried later (transient).
    let d = OpenStackDriver::new(OpenStackSettings::new(
        "http://127.0.0.1:9/v3",
        app_cred(&peer),
    ))
    .unwrap();
    let e = d.instance_types().await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("authenticating"),
        "{e}"
    );
    // A region the catalogue does not have.
    let d = OpenStackDriver::new(OpenStackSettings {
        region: Some("Atlantis".into()),
        ..OpenStackSettings::new(peer.auth_url(), app_cred(&peer))
    })
    .unwrap();
    let e = d.instance_types().await.unwrap_err();
    assert!(
        matches!(e, CloudError::Invalid(ref m) if m.contains("region")),
        "{e}"
    );

    // Faults in front of Nova: each is one request and maps to its type.
    let proxy = Proxy::start(peer.nova_port()).await;
    let d = OpenStackDriver::new(OpenStackSettings {
        network: Some("private".into()),
        endpoint_overrides: [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into(),
        ..OpenStackSettings::new(peer.auth_url(), app_cred(&peer))
    })
    .unwrap();
    d.instance_types().await.unwrap();
    let uid = "0b5e1d2a-0000-4000-8000-000000000003";
    let cases: [(Fault, &str); 5] = [
        (
            Fault::Json(503, r#"{"message": "Service Unavailable"}"#),
            "Transient",
        ),
        (Fault::Bare503, "Transient"),
        (
            Fault::Json(
                403,
                r#"{"forbidden": {"message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances", "code": 403}}"#,
            ),
            "QuotaExceeded",
        ),
        (
            Fault::Json(
                400,
                r#"{"badRequest": {"message": "No valid host was found. ", "code": 400}}"#,
            ),
            "InsufficientCapacity",
        ),
        (
            Fault::Json(
                429,
                r#"{"overLimit": {"message": "slow down", "code": 429}}"#,
            ),
            "Throttled",
        ),
    ];
    for (i, (fault, label)) in cases.into_iter().enumerate() {
        proxy.reset();
        proxy.fail("POST /v2.1/servers", fault);
        let e = d
            .create(&request(uid, "m1.small", 1, &format!("kelp-fault-{i}")))
            .await
            .unwrap_err();
        assert_eq!(e.label(), label, "{e}");
        assert_eq!(proxy.count("POST /v2.1/servers"), 1);
    }
    // A 401 (token revoked): the token is renewed once and the call goes through.
    proxy.reset();
    proxy.fail("GET /v2.1/flavors/detail", Fault::Json(401, r#"{"error": {"message": "The request you have made requires authentication.", "code": 401}}"#));
    d.instance_types().await.unwrap();
    assert_eq!(proxy.count("GET /v2.1/flavors/detail"), 2);
    // A stalled Nova: a timeout, reported as transient.
    let slow = OpenStackDriver::new(OpenStackSettings {
        timeout: Duration::from_secs(2),
        endpoint_overrides: [("compute".to_string(), format!("{}/v2.1", proxy.endpoint()))].into(),
        ..OpenStackSettings::new(peer.auth_url(), app_cred(&peer))
    })
    .unwrap();
    slow.instance_types().await.unwrap();
    proxy.fail(
        "GET /v2.1/servers/detail",
        Fault::Stall(Duration::from_secs(5)),
    );
    let e = slow.list(&owner(uid, "gpu")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        peer.servers(&peer.var("OS_PROJECT_ID")).await.is_empty(),
        "no fault started a server"
    );
    d.release(&owner(uid, "gpu")).await.unwrap();
}

fn egi_settings(peer: &OsPeer, checkin: &Checkin, refresh: &str) -> EgiSettings {
    EgiSettings {
        site: "KELP-TEST".into(),
        vo: peer.var("EGI_PROJECT_NAME"),
        checkin: CheckinCredentials {
            refresh_token: refresh.into(),
            client_id: "kelp-test-client".into(),
            client_secret: None,
            token_url: checkin.token_url(),
        },
        auth_url: None,
        identity_provider: "egi.eu".into(),
        protocol: "openid".into(),
        network: None,
        floating_ip_pool: None,
        key_name: None,
        price_overrides: BTreeMap::new(),
        endpoint_overrides: BTreeMap::new(),
    }
}

/// A site catalogue with the peer as site KELP-TEST, supporting the VO.
fn catalog(peer: &OsPeer) -> SiteCatalog {
    SiteCatalog::from_yaml(&format!(
        "gocdb: KELP-TEST\nendpoint: {}\nvos:\n- name: {}\n  auth:\n    project_id: {}\n",
        peer.auth_url().trim_end_matches("/v3"),
        peer.var("EGI_PROJECT_NAME"),
        peer.var("EGI_PROJECT_ID"),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egi_check_in_token_gets_the_vo_project_and_provisions() {
    let Some((peer, _lock, project)) = OsPeer::claim("EGI_PROJECT_ID").await else {
        return;
    };
    let checkin = Checkin::start().await;
    let entitlement = peer.var("EGI_ENTITLEMENT");
    checkin.add("rt-alice", &format!("fake:alice:{entitlement}"));
    let (d, auth) =
        egi::driver(&egi_settings(&peer, &checkin, "rt-alice"), &catalog(&peer)).unwrap();
    assert_eq!(d.name(), "egi");
    let types = d.instance_types().await.unwrap();
    assert!(types.iter().any(|t| t.name == "gpu.t4"));
    let uid = "0b5e1d2a-0000-4000-8000-0000000000e1";
    let created = d
        .create(&request(uid, "gpu.t4", 1, "kelp-egi"))
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    let ms = settled(&d, uid, 1).await;
    assert_eq!(ms[0].state, MachineState::Running);
    assert_eq!(
        peer.servers(&project).await.len(),
        1,
        "the server is in the VO's project"
    );
    assert_eq!(
        (checkin.calls(), auth.logins()),
        (1, 1),
        "one Check-in call and one federated login, reused"
    );
    d.delete(&[ms[0].id.clone()]).await.unwrap();
    peer.purge(&project).await;
    d.release(&owner(uid, "gpu")).await.unwrap();
    assert!(peer.extra_groups(&project).await.is_empty());

    // The VO's project found by name when the site is not in the catalogue.
    let mut s = egi_settings(&peer, &checkin, "rt-alice");
    s.site = "SOMEWHERE-ELSE".into();
    s.auth_url = Some(peer.auth_url());
    let (d, _) = egi::driver(&s, &SiteCatalog::default()).unwrap();
    d.instance_types().await.unwrap();
    // Without authUrl, an unknown site is an error naming the field.
    s.auth_url = None;
    let e = egi::driver(&s, &catalog(&peer)).unwrap_err();
    assert!(
        matches!(e, CloudError::Invalid(ref m) if m.starts_with("site: unknown EGI site \"SOMEWHERE-ELSE\"")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egi_revoked_refresh_token_and_outsiders_are_unauthorized_without_a_retry_storm() {
    let Some(peer) = OsPeer::get().await else {
        return;
    };
    let checkin = Checkin::start().await;
    // Revoked (never known) refresh token: Unauthorized with a clear message, and the
    // refusal is remembered: Check-in is asked once however often the driver is used.
    let (d, _) = egi::driver(
        &egi_settings(&peer, &checkin, "rt-revoked"),
        &catalog(&peer),
    )
    .unwrap();
    for _ in 0..5 {
        let e = d.instance_types().await.unwrap_err();
        assert!(
            matches!(e, CloudError::Unauthorized(ref m) if m.contains("EGI Check-in refused the refresh token") && m.contains("invalid_grant")),
            "{e}"
        );
    }
    assert_eq!(checkin.calls(), 1);
    // A user outside the VO: Keystone's mapping refuses; Unauthorized naming the VO.
    checkin.add(
        "rt-mallory",
        "fake:mallory:urn:mace:egi.eu:group:vo.other.eu:role=member#aai.egi.eu",
    );
    let (d, _) = egi::driver(
        &egi_settings(&peer, &checkin, "rt-mallory"),
        &catalog(&peer),
    )
    .unwrap();
    let e = d.instance_types().await.unwrap_err();
    assert!(
        matches!(e, CloudError::Unauthorized(ref m) if m.contains("member of VO") && m.contains(&peer.var("EGI_PROJECT_NAME"))),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_k3s_server_gets_a_tagged_floating_ip_that_goes_with_it() {
    let Some((peer, _lock, project)) = OsPeer::claim("OS_PROJECT_ID").await else {
        return;
    };
    let d = OpenStackDriver::new(OpenStackSettings {
        network: Some("private".into()),
        floating_ip_pool: Some("public".into()),
        ..OpenStackSettings::new(peer.auth_url(), app_cred(&peer))
    })
    .unwrap();
    let uid = "0b5e1d2a-0000-4000-8000-0000000000f1";
    let mut server = request(uid, "m1.small", 1, "kelp-fip-server");
    server.owner.role = kelp_cloud_drivers::Role::Server;
    d.create(&server).await.unwrap();
    d.create(&request(uid, "m1.small", 1, "kelp-fip-agent"))
        .await
        .unwrap();
    // Only the k3s server gets one, once it is ACTIVE.
    let mut ms = Vec::new();
    for _ in 0..120 {
        ms = d.list(&owner(uid, "gpu")).await.unwrap();
        if ms.len() == 2
            && ms
                .iter()
                .any(|m| m.addresses.iter().any(|a| a.kind == "ExternalIP"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let with_ip: Vec<_> = ms
        .iter()
        .filter(|m| m.addresses.iter().any(|a| a.kind == "ExternalIP"))
        .collect();
    assert_eq!(with_ip.len(), 1, "{ms:?}");
    assert_eq!(with_ip[0].tags[tags::ROLE], "server");
    let fips = peer.neutron("floatingips", &project).await;
    assert_eq!(fips.len(), 1);
    assert!(
        fips[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == &uid_tag(uid))
    );
    let ext = with_ip[0]
        .addresses
        .iter()
        .find(|a| a.kind == "ExternalIP")
        .unwrap();
    assert_eq!(fips[0]["floating_ip_address"], ext.address.as_str());
    // Listing again allocates nothing more.
    d.list(&owner(uid, "gpu")).await.unwrap();
    assert_eq!(peer.neutron("floatingips", &project).await.len(), 1);
    // The server goes: its floating IP is released at the next list.
    d.delete(&[with_ip[0].id.clone()]).await.unwrap();
    for _ in 0..120 {
        let ms = d.list(&owner(uid, "gpu")).await.unwrap();
        if ms.len() == 1 && peer.neutron("floatingips", &project).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        peer.neutron("floatingips", &project).await.is_empty(),
        "released with its server"
    );
    let rest: Vec<String> = d
        .list(&owner(uid, "gpu"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    d.delete(&rest).await.unwrap();
    peer.purge(&project).await;
    d.release(&owner(uid, "gpu")).await.unwrap();
    assert!(peer.extra_groups(&project).await.is_empty());
}
