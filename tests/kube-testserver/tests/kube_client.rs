//! kube-rs clients against the test API server.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube_testserver::{Fault, FaultScope, TestApiServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn api_code(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    c
}

fn cr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

const CSR_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KZmFrZQotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K";

fn certificate_request(name: &str) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "request": CSR_B64,
            "issuerRef": {"name": "canopy", "kind": "Issuer", "group": "pki.canopy.dev"},
            "usages": ["client auth", "server auth"],
            "duration": "1h",
        }
    })
}

#[tokio::test]
async fn crud_conflicts_and_errors() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    let mut s = Secret::default();
    s.metadata.name = Some("one".into());
    s.metadata.labels = Some([("app".to_string(), "canopy".to_string())].into());
    s.string_data = Some([("k".to_string(), "v".to_string())].into());
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(created.data.unwrap()["k"].0, b"v");
    assert!(created.string_data.is_none());

    // duplicate create, missing object, missing namespace, bad name
    assert_eq!(
        api_code(secrets.create(&PostParams::default(), &s).await),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_code(secrets.get("nope").await),
        (404, "NotFound".into())
    );
    let elsewhere: Api<Secret> = Api::namespaced(client.clone(), "missing-ns");
    assert_eq!(
        api_code(elsewhere.create(&PostParams::default(), &s).await),
        (404, "NotFound".into())
    );
    let mut bad = s.clone();
    bad.metadata.name = Some("Not_A_Name".into());
    assert_eq!(
        api_code(secrets.create(&PostParams::default(), &bad).await),
        (422, "Invalid".into())
    );
    let mut unnamed = s.clone();
    unnamed.metadata.name = None;
    assert_eq!(
        api_code(secrets.create(&PostParams::default(), &unnamed).await),
        (422, "Invalid".into())
    );
    unnamed.metadata.generate_name = Some("gen-".into());
    let generated = secrets
        .create(&PostParams::default(), &unnamed)
        .await
        .unwrap();
    assert!(generated.metadata.name.unwrap().starts_with("gen-"));

    // list with selectors
    let all = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(all.metadata.resource_version.is_some());
    let sel = secrets
        .list(
            &ListParams::default()
                .labels("app=canopy")
                .fields("metadata.name=one"),
        )
        .await
        .unwrap();
    assert_eq!(sel.items.len(), 2 - 1);
    assert_eq!(
        secrets
            .list(&ListParams::default().labels("app!=canopy,app"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    assert_eq!(
        secrets
            .list(&ListParams::default().labels("!app"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    let page = secrets.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = secrets
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].metadata.name, page.items[0].metadata.name);

    // replace: fresh RV works, stale RV is a 409 Conflict
    let mut fresh = secrets.get("one").await.unwrap();
    fresh.metadata.annotations = Some([("a".to_string(), "1".to_string())].into());
    let replaced = secrets
        .replace("one", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let mut stale = replaced.clone();
    stale.metadata.resource_version = Some(rv1.clone());
    assert_eq!(
        api_code(secrets.replace("one", &PostParams::default(), &stale).await),
        (409, "Conflict".into())
    );

    // a no-op replace does not bump the resourceVersion
    let again = secrets
        .replace("one", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        replaced.metadata.resource_version
    );

    // merge patch, strategic merge patch, JSON patch (incl. a failing `test`)
    let p = secrets
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "x"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["tier"], "x");
    let p = secrets
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"tier": null}}})),
        )
        .await
        .unwrap();
    assert!(!p.metadata.labels.unwrap().contains_key("tier"));
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/app", "value": "canopy"},
        {"op": "add", "path": "/metadata/labels/jp", "value": "yes"}
    ]))
    .unwrap();
    let p = secrets
        .patch("one", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["jp"], "yes");
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/app", "value": "other"}
    ]))
    .unwrap();
    assert_eq!(
        api_code(
            secrets
                .patch("one", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
        )
        .0,
        422
    );
    // a merge patch carrying a stale resourceVersion conflicts
    let stale_patch =
        Patch::Merge(json!({"metadata": {"resourceVersion": rv1, "labels": {"z": "1"}}}));
    assert_eq!(
        api_code(
            secrets
                .patch("one", &PatchParams::default(), &stale_patch)
                .await
        )
        .0,
        409
    );
    assert_eq!(
        api_code(
            secrets
                .patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
        )
        .0,
        404
    );

    // delete
    secrets
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(secrets.get("one").await).0, 404);
    assert!(server
        .get("v1", "secrets", Some("default"), "one")
        .is_none());

    // unauthenticated requests are rejected
    let mut cfg = kube::Config::new(server.url().parse().unwrap());
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(server.ca_pem().as_bytes()).unwrap();
    cfg.root_cert = Some(vec![der.to_vec()]);
    let anon = kube::Client::try_from(cfg).unwrap();
    let anon_ns: Api<Namespace> = Api::all(anon);
    assert_eq!(
        api_code(anon_ns.list(&ListParams::default()).await),
        (401, "Unauthorized".into())
    );
    assert!(server.request_log().iter().any(|r| r.status == 401));
}

#[tokio::test]
async fn server_side_apply_with_two_managers() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = PatchParams::apply("manager-a");
    let b = PatchParams::apply("manager-b");
    let cfg_a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"shared": "1", "only-a": "x"}});
    let created = cms.patch("ssa", &a, &Patch::Apply(&cfg_a)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap()["shared"], "1");
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("manager-a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert_eq!(fields, json!({"f:data": {"f:shared": {}, "f:only-a": {}}}));

    // same value from b: shared ownership, no conflict
    let cfg_b_same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"shared": "1"}});
    let shared = cms
        .patch("ssa", &b, &Patch::Apply(&cfg_b_same))
        .await
        .unwrap();
    assert_eq!(shared.metadata.managed_fields.unwrap().len(), 2);

    // different value from b: 409 naming the field and the other manager
    let cfg_b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"shared": "2"}});
    match cms.patch("ssa", &b, &Patch::Apply(&cfg_b)).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains("manager-a"), "{}", s.message);
            assert!(s.message.contains(".data.shared"), "{}", s.message);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    // force moves ownership
    let forced = cms
        .patch("ssa", &b.clone().force(), &Patch::Apply(&cfg_b))
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["shared"], "2");
    let mf = forced.metadata.managed_fields.unwrap();
    let owner_of = |m: &str| {
        mf.iter()
            .find(|e| e.manager.as_deref() == Some(m))
            .map(|e| serde_json::to_value(&e.fields_v1).unwrap())
            .unwrap_or(Value::Null)
    };
    assert_eq!(owner_of("manager-a"), json!({"f:data": {"f:only-a": {}}}));
    assert_eq!(owner_of("manager-b"), json!({"f:data": {"f:shared": {}}}));

    // a stops applying only-a: removed (nobody else owns it)
    let cfg_a2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let pruned = cms.patch("ssa", &a, &Patch::Apply(&cfg_a2)).await.unwrap();
    let data = pruned.data.unwrap_or_default();
    assert!(!data.contains_key("only-a"), "{data:?}");
    assert_eq!(data["shared"], "2");

    // an Update by a third manager takes the field it changed; then apply conflicts with it
    cms.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"shared": "3"}})),
    )
    .await
    .unwrap();
    let (code, _) = api_code(cms.patch("ssa", &b, &Patch::Apply(&cfg_b)).await);
    assert_eq!(code, 409);

    // a stale resourceVersion in an apply body conflicts
    let stale = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "resourceVersion": "1"}, "data": {"x": "y"}});
    assert_eq!(
        api_code(cms.patch("ssa", &a, &Patch::Apply(&stale)).await).0,
        409
    );

    let log = server.request_log();
    let applies: Vec<_> = log
        .iter()
        .filter(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .collect();
    assert!(applies
        .iter()
        .all(|r| r.query_param("fieldManager").is_some()));
    assert!(applies
        .iter()
        .any(|r| r.query_param("force").as_deref() == Some("true")));
}

#[tokio::test]
async fn status_subresource_and_crd_validation() {
    let server = TestApiServer::start("azure").await;
    server.install_cert_manager_crds().unwrap();
    let crd = server
        .get(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            "certificaterequests.cert-manager.io",
        )
        .unwrap();
    let conds = crd["status"]["conditions"].as_array().unwrap();
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True"));
    let client = server.client().await;
    let crs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &cr_resource());

    // status in a create is ignored for kinds with a status subresource
    let mut body = certificate_request("one");
    body["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    let created = crs.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.data.get("status").is_none());
    assert_eq!(created.metadata.generation, Some(1));
    // schema default applied
    assert_eq!(created.data["spec"]["issuerRef"]["group"], "pki.canopy.dev");

    // status written via SSA on /status with our field manager
    server.clear_request_log();
    let status_apply = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": "one", "labels": {"ignored": "yes"}},
        "spec": {"duration": "999h"},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Issued", "message": "ok",
                                   "lastTransitionTime": "2025-01-01T00:00:00Z"}],
                   "certificate": CSR_B64}
    });
    let pp = PatchParams::apply("canopy-issuer").force();
    let after = crs
        .patch_status("one", &pp, &Patch::Apply(&status_apply))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["reason"], "Issued");
    assert_eq!(
        after.data["spec"]["duration"], "1h",
        "status writes must not change spec"
    );
    assert!(after
        .metadata
        .labels
        .as_ref()
        .is_none_or(|l| !l.contains_key("ignored")));
    assert_eq!(after.metadata.generation, Some(1));
    let mf = after.metadata.managed_fields.unwrap();
    let mine = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("canopy-issuer"))
        .unwrap();
    assert_eq!(mine.subresource.as_deref(), Some("status"));
    let fields = serde_json::to_value(&mine.fields_v1).unwrap();
    assert!(
        fields["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"]["."].is_object(),
        "{fields}"
    );
    let log = server.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "PATCH");
    assert!(log[0].path.ends_with("/certificaterequests/one/status"));
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        log[0].query_param("fieldManager").as_deref(),
        Some("canopy-issuer")
    );

    // writes to the main resource ignore status; spec changes bump generation
    let main = crs
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"duration": "2h"}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(main.metadata.generation, Some(2));
    assert_eq!(main.data["status"]["conditions"][0]["type"], "Ready");

    // merge patch on /status adds a condition; associative list keyed by type via SSA
    let approved = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "one"},
        "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "test", "message": "ok"}]}});
    let both = crs
        .patch_status(
            "one",
            &PatchParams::apply("approver"),
            &Patch::Apply(&approved),
        )
        .await
        .unwrap();
    let types: Vec<&str> = both.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "Approved"]);

    // schema validation: required, enum, type, format byte
    for (path, value) in [
        ("/spec/request", Value::Null),
        ("/spec/usages", json!(["bogus usage"])),
        ("/spec/isCA", json!("yes")),
        ("/spec/request", json!("%%% not base64 %%%")),
    ] {
        let mut bad = certificate_request("bad");
        if value.is_null() {
            bad["spec"].as_object_mut().unwrap().remove("request");
        } else {
            *bad.pointer_mut(path).unwrap_or(&mut Value::Null) = value.clone();
            if bad.pointer(path).is_none() {
                bad["spec"][path.trim_start_matches("/spec/")] = value.clone();
            }
        }
        let obj: DynamicObject = serde_json::from_value(bad).unwrap();
        match crs.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) => assert_eq!(
                (s.code, s.reason.as_str()),
                (422, "Invalid"),
                "{path}: {}",
                s.message
            ),
            other => panic!("{path}: expected 422, got {other:?}"),
        }
    }
    // invalid status via /status is rejected too
    let bad_status = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "one"},
        "status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}});
    assert_eq!(
        api_code(
            crs.patch_status(
                "one",
                &PatchParams::apply("x").force(),
                &Patch::Apply(&bad_status)
            )
            .await
        )
        .0,
        422
    );
    // kind mismatch in the body
    let mut wrong = certificate_request("wrong");
    wrong["kind"] = json!("Certificate");
    let obj: DynamicObject = serde_json::from_value(wrong).unwrap();
    assert_eq!(
        api_code(crs.create(&PostParams::default(), &obj).await).0,
        400
    );
}

async fn next_matching<S, F>(stream: &mut S, what: &str, mut f: F)
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
    F: FnMut(&watcher::Event<ConfigMap>) -> bool,
{
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = stream.next().await {
            if let Ok(ev) = ev {
                if f(&ev) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "timed out waiting for {what}");
}

fn named(ev: &watcher::Event<ConfigMap>, name: &str, kind: &str) -> bool {
    match (ev, kind) {
        (watcher::Event::Apply(o) | watcher::Event::InitApply(o), "apply") => {
            o.metadata.name.as_deref() == Some(name)
        }
        (watcher::Event::Delete(o), "delete") => o.metadata.name.as_deref() == Some(name),
        _ => false,
    }
}

#[tokio::test]
async fn watcher_sees_changes_and_recovers() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("before", &[("a", "1")]))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("!skip")).boxed();
    next_matching(&mut stream, "initial list", |e| named(e, "before", "apply")).await;
    next_matching(&mut stream, "init done", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;

    cms.create(&PostParams::default(), &cm("w1", &[("a", "1")]))
        .await
        .unwrap();
    next_matching(&mut stream, "ADDED w1", |e| named(e, "w1", "apply")).await;
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    next_matching(
        &mut stream,
        "MODIFIED w1",
        |e| matches!(e, watcher::Event::Apply(o) if o.data.as_ref().is_some_and(|d| d["a"] == "2")),
    )
    .await;
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    next_matching(&mut stream, "DELETED w1", |e| named(e, "w1", "delete")).await;

    // an object leaving the selector is a DELETED event for this watch
    cms.create(&PostParams::default(), &cm("sel", &[]))
        .await
        .unwrap();
    next_matching(&mut stream, "ADDED sel", |e| named(e, "sel", "apply")).await;
    cms.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"skip": "1"}}})),
    )
    .await
    .unwrap();
    next_matching(&mut stream, "sel leaves selector", |e| {
        named(e, "sel", "delete")
    })
    .await;

    // dropped watch streams are resumed from the last resourceVersion
    server.set_fault(Fault::DropWatches);
    cms.create(&PostParams::default(), &cm("after-drop", &[]))
        .await
        .unwrap();
    next_matching(&mut stream, "ADDED after drop", |e| {
        named(e, "after-drop", "apply")
    })
    .await;

    // history expired: the resumed watch gets 410 Gone and the watcher relists
    server.clear_request_log();
    server.expire_watch_history();
    server.set_fault(Fault::DropWatches);
    next_matching(&mut stream, "relist after 410", |e| {
        matches!(e, watcher::Event::Init)
    })
    .await;
    next_matching(&mut stream, "relist done", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;
    cms.create(&PostParams::default(), &cm("after-410", &[]))
        .await
        .unwrap();
    next_matching(&mut stream, "ADDED after 410", |e| {
        named(e, "after-410", "apply")
    })
    .await;
    let log = server.request_log();
    let watches = log
        .iter()
        .filter(|r| r.query_param("watch").as_deref() == Some("true"))
        .count();
    let lists = log
        .iter()
        .filter(|r| r.method == "GET" && r.query_param("watch").is_none())
        .count();
    assert!(watches >= 2 && lists >= 1, "{log:#?}");
}

#[tokio::test]
async fn raw_watch_replays_bookmarks_and_gone() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &cm("r1", &[]))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("r2", &[]))
        .await
        .unwrap();
    // resuming from rv replays only later events, then bookmarks arrive
    let wp = kube::api::WatchParams::default().timeout(5);
    let mut s = cms.watch(&wp, &rv).await.unwrap().boxed();
    let mut seen_added = Vec::new();
    let mut bookmark = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match ev {
            kube::api::WatchEvent::Added(o) => seen_added.push(o.metadata.name.unwrap()),
            kube::api::WatchEvent::Bookmark(_) => {
                bookmark = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen_added, ["r2"]);
    assert!(bookmark);
    // too old: an ERROR event with a 410 Status
    server.expire_watch_history();
    let mut s = cms.watch(&wp, &rv).await.unwrap().boxed();
    match s.try_next().await.unwrap() {
        Some(kube::api::WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn lease_create_and_renew() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "canopy-issuer"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                 "acquireTime": "2025-01-01T00:00:00.000000Z", "renewTime": "2025-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().renew_time =
        Some(serde_json::from_value(json!("2025-01-01T00:00:05.000000Z")).unwrap());
    let renewed = leases
        .replace("canopy-issuer", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(
        renewed.metadata.resource_version,
        created.metadata.resource_version
    );
    // a competing candidate with the old resourceVersion loses
    let mut steal = created.clone();
    steal.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    assert_eq!(
        api_code(
            leases
                .replace("canopy-issuer", &PostParams::default(), &steal)
                .await
        ),
        (409, "Conflict".into())
    );
    let now = leases.get("canopy-issuer").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));
}

#[tokio::test]
async fn faults_error_hang_and_scope() {
    let server = TestApiServer::start("aws").await;
    let client = server.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    server.set_fault(Fault::Error {
        status: 500,
        count: Some(2),
    });
    assert_eq!(
        api_code(secrets.list(&ListParams::default()).await),
        (500, "InternalError".into())
    );
    assert_eq!(api_code(secrets.get("x").await).0, 500);
    assert_eq!(
        api_code(secrets.get("x").await).0,
        404,
        "fault must be used up after 2 requests"
    );

    // hang until cleared
    server.set_fault(Fault::Hang { count: None });
    let s2 = secrets.clone();
    let pending = tokio::spawn(async move { s2.list(&ListParams::default()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "request should hang");
    server.set_fault(Fault::None);
    let done = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(done.is_ok());

    // scoped: only PATCH on secrets fails with 409, reads still work
    let mut s = Secret::default();
    s.metadata.name = Some("scoped".into());
    secrets.create(&PostParams::default(), &s).await.unwrap();
    server.set_fault_scoped(
        Fault::Error {
            status: 409,
            count: None,
        },
        FaultScope::verb_on("patch", "secrets"),
    );
    assert_eq!(
        api_code(
            secrets
                .patch("scoped", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
        ),
        (409, "Conflict".into())
    );
    assert!(secrets.get("scoped").await.is_ok());
    // a fault scoped to /status leaves main-resource requests alone
    server.set_fault_scoped(
        Fault::Error {
            status: 504,
            count: Some(1),
        },
        FaultScope::default().subresource("status"),
    );
    assert!(secrets.get("scoped").await.is_ok());
    server.set_fault(Fault::None);
    assert!(secrets
        .patch("scoped", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .is_ok());
}

#[tokio::test]
async fn two_clusters_are_independent() {
    let aws = TestApiServer::start("aws").await;
    let azure = TestApiServer::start("azure").await;
    assert_ne!(aws.token(), azure.token());
    assert_ne!(aws.ca_pem(), azure.ca_pem());
    let a: Api<ConfigMap> = Api::namespaced(aws.client().await, "default");
    let z: Api<ConfigMap> = Api::namespaced(azure.client().await, "default");
    a.create(&PostParams::default(), &cm("only-aws", &[]))
        .await
        .unwrap();
    assert!(z.get("only-aws").await.is_err());
    assert_eq!(aws.list("v1", "configmaps", Some("default")).len(), 1);
    assert!(azure.list("v1", "configmaps", None).is_empty());
    let nss: Api<Namespace> = Api::all(azure.client().await);
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["default", "kube-system"]);
    azure.shutdown().await;
    assert!(z.list(&ListParams::default()).await.is_err());
}
