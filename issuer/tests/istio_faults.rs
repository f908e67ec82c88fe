//! The API server fails mid-write (409, 500, a hung request): the sync retries, and the
//! Secret in the server is always either the old one or the whole new one.
//!
//! Fake API server: the real kube-apiserver cannot be made to answer a given number of
//! 500s, 503s or 409s to one verb, or to hold one write unanswered, on demand.

use std::time::Duration as StdDuration;

use crate::istio_common::*;
use canopy_issuer::istio::{self, Outcome};
use kube_testserver::{Fault, FaultScope};
use time::Duration;

fn serial(mesh: &Mesh, c: &str) -> String {
    mesh.secret(c).unwrap()["metadata"]["annotations"]["canopy.dev/ca-serial"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The Secret in the server is complete and valid at `at` (never half-written).
fn whole_and_valid(mesh: &Mesh, c: &str, tag: &str, at: time::OffsetDateTime) {
    openssl_check_secret(&mesh.path().join(tag), &mesh.files(c), at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_mid_write_are_retried() {
    let mesh = Mesh::start_fake().await;
    let setup = mesh.setup();
    // Create fails once with 500.
    mesh.aws.fake().set_fault_scoped(
        Fault::Error {
            status: 500,
            count: Some(1),
        },
        FaultScope::verb_on("create", "secrets"),
    );
    let r = istio::sync_once(setup.clone(), mesh.store.clone(), mesh.t0).await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Created(_)),
        "{r}"
    );
    assert_eq!(
        mesh.recorded_mesh_cas("aws").await.len(),
        1,
        "one mint for all attempts"
    );
    whole_and_valid(&mesh, "aws", "c0", mesh.t0);

    // Renewal: the update fails twice with 500, then lands.
    let at = mesh.t0 + Duration::days(61);
    mesh.aws.fake().clear_request_log();
    mesh.aws.fake().set_fault_scoped(
        Fault::Error {
            status: 500,
            count: Some(2),
        },
        FaultScope::verb_on("update", "secrets"),
    );
    let r = istio::sync_once(setup.clone(), mesh.store.clone(), at).await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Updated(_)),
        "{r}"
    );
    let puts: Vec<u16> = mesh
        .aws
        .fake()
        .request_log()
        .iter()
        .filter(|x| x.method == "PUT")
        .map(|x| x.status)
        .collect();
    assert_eq!(puts, vec![500, 500, 200]);
    assert_eq!(
        mesh.recorded_mesh_cas("aws").await.len(),
        2,
        "one mint for all attempts"
    );
    assert_eq!(Some(serial(&mesh, "aws")), r.cluster("aws").unwrap().minted);
    whole_and_valid(&mesh, "aws", "c1", at);

    // A 409 (someone else wrote) makes it read again and decide again.
    let at = mesh.t0 + Duration::days(122);
    mesh.aws.fake().clear_request_log();
    mesh.aws.fake().set_fault_scoped(
        Fault::Error {
            status: 409,
            count: Some(1),
        },
        FaultScope::verb_on("update", "secrets"),
    );
    let r = istio::sync_once(setup.clone(), mesh.store.clone(), at).await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Updated(_)),
        "{r}"
    );
    let log = mesh.aws.fake().request_log();
    let puts: Vec<u16> = log
        .iter()
        .filter(|x| x.method == "PUT")
        .map(|x| x.status)
        .collect();
    assert_eq!(puts, vec![409, 200]);
    let first_put = log.iter().position(|x| x.method == "PUT").unwrap();
    assert!(
        log[first_put..].iter().any(|x| x.method == "GET"),
        "re-read after the conflict"
    );
    assert_eq!(mesh.recorded_mesh_cas("aws").await.len(), 3);
    whole_and_valid(&mesh, "aws", "c2", at);

    // Errors that never stop: a clear failure, the old Secret intact.
    let at = mesh.t0 + Duration::days(183);
    let before = mesh.files("aws");
    mesh.aws.fake().set_fault_scoped(
        Fault::Error {
            status: 503,
            count: None,
        },
        FaultScope::verb_on("update", "secrets"),
    );
    let r = istio::sync_once(setup.clone(), mesh.store.clone(), at).await;
    assert!(
        matches!(&r.cluster("aws").unwrap().outcome, Outcome::Failed(m) if m.contains("gave up")),
        "{r}"
    );
    assert_eq!(r.exit_code(), 1);
    assert_eq!(mesh.files("aws"), before);
    mesh.aws.fake().set_fault(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_write_times_out_is_retried_and_cannot_clobber_later() {
    let mesh = Mesh::start_fake().await;
    let setup = mesh.setup();
    istio::sync_once(setup.clone(), mesh.store.clone(), mesh.t0).await;
    let old_serial = serial(&mesh, "aws");
    let at = mesh.t0 + Duration::days(61);
    mesh.aws.fake().clear_request_log();
    mesh.aws.fake().set_fault_scoped(
        Fault::Hang { count: Some(1) },
        FaultScope::verb_on("update", "secrets"),
    );
    let started = std::time::Instant::now();
    let task = {
        let (setup, store) = (setup.clone(), mesh.store.clone());
        tokio::spawn(async move { istio::sync_once(setup, store, at).await })
    };
    // While the first write hangs, the server holds the whole old Secret.
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    assert_eq!(serial(&mesh, "aws"), old_serial);
    whole_and_valid(&mesh, "aws", "during", mesh.t0);
    let r = task.await.unwrap();
    assert!(
        started.elapsed() >= StdDuration::from_secs(2),
        "the first write timed out"
    );
    let minted = r.cluster("aws").unwrap().minted.clone().unwrap();
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Updated(_)),
        "{r}"
    );
    assert_eq!(serial(&mesh, "aws"), minted);
    let rv = mesh.rv("aws");
    // Releasing the hung request: the client gave up on it (its connection is gone) or, if
    // the server still serves it, it carries the old resourceVersion and fails with 409.
    mesh.aws.fake().set_fault(Fault::None);
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let puts: Vec<u16> = mesh
        .aws
        .fake()
        .request_log()
        .iter()
        .filter(|x| x.method == "PUT")
        .map(|x| x.status)
        .collect();
    assert_eq!(puts.iter().filter(|s| **s == 200).count(), 1, "{puts:?}");
    assert!(puts.iter().all(|s| *s == 200 || *s == 409), "{puts:?}");
    assert_eq!(mesh.rv("aws"), rv);
    assert_eq!(serial(&mesh, "aws"), minted);
    whole_and_valid(&mesh, "aws", "after", at);
    assert_eq!(mesh.recorded_mesh_cas("aws").await.len(), 2);
}
