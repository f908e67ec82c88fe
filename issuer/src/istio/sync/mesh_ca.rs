//! A new mesh CA is minted under the cluster's intermediate and recorded (certificate
//! store and audit log) before it is published anywhere; every `cacerts` write is
//! audited.

use canopy::ca::IssuedCertificate;
use canopy::key::KeyPair;
use canopy::profile::{CaProfile, CaRequest, Profile};
use serde_json::json;
use time::OffsetDateTime;

use super::{Syncer, ACTOR};
use crate::audit::{AuditEvent, Outcome as AuditOutcome};
use crate::istio::desired::Desired;
use crate::istio::setup::{ClusterSetup, Signing};
use crate::store::{CertificateRecord, Write};

impl Syncer {
    /// Mints a mesh CA under `signing` and records it (certificate store + audit log)
    /// before it is published anywhere.
    pub(super) async fn mint(
        &self,
        cluster: &ClusterSetup,
        signing: &Signing,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(IssuedCertificate, KeyPair), String> {
        let req = CaRequest {
            trust_domain: Some(self.setup.trust_domain.clone()),
            ttl: Some(cluster.settings.mesh_ca_ttl),
            path_len: Some(0),
            clamp_to_issuer: true,
            name_constraints: Some(
                cluster
                    .settings
                    .mesh_ca_constraints(&self.setup.trust_domain),
            ),
            ..CaRequest::new(CaProfile::MeshCa, format!("{} mesh CA", cluster.name))
        };
        let (issued, key) = signing
            .ca
            .issue_with_new_key(&req, cluster.settings.key_type, now)
            .map_err(|e| {
                format!(
                    "cannot mint a mesh CA under intermediate {}: {e}",
                    signing.name
                )
            })?;
        let cert = &issued.certificate;
        let record = CertificateRecord {
            cluster: Some(cluster.name.to_string()),
            namespace: Some(cluster.settings.namespace.clone()),
            ..CertificateRecord::new(
                cert,
                &signing.name,
                &Profile::MeshCa.to_string(),
                ACTOR,
                "internal",
                now.unix_timestamp(),
            )
        };
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            ACTOR,
            "sign",
            cert.serial().to_string(),
            AuditOutcome::Ok,
            json!({
                "profile": "mesh-ca",
                "intermediate": signing.name,
                "cluster": cluster.name.as_str(),
                "reason": reason,
                "not_after": cert.not_after().unix_timestamp(),
                "clamped": issued.clamped,
                "fingerprint": cert.fingerprint_sha256(),
            }),
        );
        self.store
            .as_ref()
            .ok_or("no storage to record the mesh CA in")?
            .commit([Write::Issued(Box::new(record), event)])
            .await
            .map_err(|e| {
                format!("could not record the new mesh CA, so it was not published: {e}")
            })?;
        Ok((issued, key))
    }

    /// Audits a `cacerts` write (`what`: created or updated).
    pub(super) async fn audit_write(
        &self,
        cluster: &ClusterSetup,
        what: &str,
        d: &Desired,
        now: OffsetDateTime,
    ) {
        let event = AuditEvent::new(
            crate::clock::unix_ms(now),
            ACTOR,
            "cacerts.write",
            cluster.name.to_string(),
            AuditOutcome::Ok,
            json!({
                "cluster": cluster.name.as_str(),
                "namespace": cluster.settings.namespace,
                "what": what,
                "ca_serial": d.ca.serial().to_string(),
                "ca_not_after": d.ca.not_after().unix_timestamp(),
            }),
        );
        let Some(store) = &self.store else { return };
        if let Err(e) = store.append_events(&[event]).await {
            tracing::warn!(cluster = %cluster.name, error = %e, "could not audit a cacerts write");
        }
    }
}
