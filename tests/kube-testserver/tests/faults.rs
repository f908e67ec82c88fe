//! The fake API server's fault injection, and the behaviour the remaining fault tests
//! (issuer/tests/istio_faults.rs, three in issuer/tests/certmanager_branches.rs) rely on:
//! counted errors, hangs, scopes, dropped watches that kube-rs's watcher resumes, and
//! forced server-side apply by two managers merging status conditions by `type`.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube_testserver::{Fault, FaultScope, TestApiServer};
use serde_json::json;
use std::time::Duration;

fn api_code(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s
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

    // scoped: only PUT on secrets fails with 409, reads still work
    let created = secrets
        .create(&PostParams::default(), &secret("scoped"))
        .await
        .unwrap();
    server.set_fault_scoped(
        Fault::Error {
            status: 409,
            count: None,
        },
        FaultScope::verb_on("update", "secrets"),
    );
    assert_eq!(
        api_code(
            secrets
                .replace("scoped", &PostParams::default(), &created)
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
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), ByteString(b"v".to_vec()))].into());
    let replaced = secrets
        .replace("scoped", &PostParams::default(), &changed)
        .await
        .unwrap();
    // a stale resourceVersion is a conflict
    assert_eq!(
        api_code(
            secrets
                .replace("scoped", &PostParams::default(), &created)
                .await
        )
        .0,
        409
    );
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let log = server.request_log();
    let puts: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(puts, [409, 200, 409]);
}

/// Waits (up to 20 s) until the watcher reports the Secret `want`.
async fn seen<S>(stream: &mut S, want: &str)
where
    S: futures::Stream<Item = Result<watcher::Event<Secret>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev {
                if o.metadata.name.as_deref() == Some(want) {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {want}"));
}

#[tokio::test]
async fn dropped_watches_are_resumed() {
    let server = TestApiServer::start("aws").await;
    let secrets: Api<Secret> = Api::namespaced(server.client().await, "default");
    secrets
        .create(&PostParams::default(), &secret("before"))
        .await
        .unwrap();
    let mut stream = watcher(secrets.clone(), watcher::Config::default()).boxed();
    seen(&mut stream, "before").await;
    secrets
        .create(&PostParams::default(), &secret("live"))
        .await
        .unwrap();
    seen(&mut stream, "live").await;
    server.set_fault(Fault::DropWatches);
    secrets
        .create(&PostParams::default(), &secret("after-drop"))
        .await
        .unwrap();
    seen(&mut stream, "after-drop").await;
    let watches = server
        .request_log()
        .iter()
        .filter(|r| r.query_param("watch").as_deref() == Some("true"))
        .count();
    assert!(watches >= 2, "the watch was opened again");
}

#[tokio::test]
async fn forced_applies_by_two_managers_merge_conditions() {
    let server = TestApiServer::start("aws").await;
    server.install_cert_manager_crds().unwrap();
    server
        .create(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "cr", "namespace": "default"},
            "spec": {"request": "", "issuerRef": {"name": "canopy"}},
        }))
        .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(server.client().await, "default", &ar);
    let condition = |manager: &str, type_: &str, message: &str| {
        let body = json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "cr", "namespace": "default"},
            "status": {"conditions": [{"type": type_, "status": "True", "message": message}]},
        });
        let api = api.clone();
        let params = PatchParams::apply(manager).force();
        async move {
            api.patch_status("cr", &params, &Patch::Apply(&body))
                .await
                .unwrap()
        }
    };
    condition("approver", "Approved", "ok").await;
    condition("canopy", "Ready", "Pending").await;
    let cr = condition("canopy", "Ready", "Issued").await;
    let conditions = cr.data["status"]["conditions"].as_array().unwrap().clone();
    let by_type = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {conditions:?}"))
            .clone()
    };
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert_eq!(by_type("Approved")["message"], "ok");
    assert_eq!(by_type("Ready")["message"], "Issued");
    let managers: Vec<String> = cr
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|e| e.manager.clone())
        .collect();
    assert!(managers.contains(&"approver".to_string()), "{managers:?}");
    assert!(managers.contains(&"canopy".to_string()), "{managers:?}");
    // the server stored it: a plain read sees the same
    let stored = server
        .get(
            "cert-manager.io/v1",
            "certificaterequests",
            Some("default"),
            "cr",
        )
        .unwrap();
    assert_eq!(stored["status"]["conditions"].as_array().unwrap().len(), 2);
}
