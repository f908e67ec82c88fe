//! `canopy-issuer revoke SERIAL`: the operator revokes any recorded certificate, straight
//! on the database, and may put its SPIFFE ID on the deny list.

use std::process::ExitCode;

use anyhow::bail;
use canopy_issuer::store::Store;

use super::source::Source;

/// Runs `revoke SERIAL [--reason R] [--deny-renewal]`.
pub async fn run(
    source: &Source,
    serial: &str,
    reason: Option<&str>,
    deny_renewal: bool,
) -> anyhow::Result<ExitCode> {
    let (_, store) = source.store(1).await?;
    store.migrate().await?;
    let result = operator_revoke(&store, serial, reason, deny_renewal).await;
    store.close().await;
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

/// `canopy-issuer revoke SERIAL`: any recorded certificate, by an operator.
async fn operator_revoke(
    store: &Store,
    serial: &str,
    reason: Option<&str>,
    deny_renewal: bool,
) -> anyhow::Result<String> {
    use canopy::crl::RevocationReason;
    use canopy_issuer::store::{Revocation, StoreError};
    let serial: canopy::serial::Serial = serial.parse()?;
    let serial = serial.to_string();
    let reason: RevocationReason = match reason {
        Some(r) => r.parse()?,
        None => RevocationReason::Unspecified,
    };
    let now = canopy_issuer::clock::now_precise().unix_timestamp();
    let record = match store.certificate(&serial).await {
        Err(StoreError::NotFound) => bail!("no certificate with serial {serial} is recorded"),
        other => other?,
    };
    let event = super::event(
        "revoke",
        &serial,
        serde_json::json!({"reason": reason.to_string(), "spiffe_id": record.spiffe_id, "intermediate": record.intermediate, "not_after": record.not_after}),
    );
    let outcome = store
        .revoke(&serial, Some(&reason.to_string()), now, event)
        .await?;
    let mut message = match outcome {
        Revocation::Revoked(r) => format!("revoked {} ({}, {})", r.serial, r.profile, r.subject),
        Revocation::AlreadyRevoked(r) => format!("{} was already revoked", r.serial),
    };
    if deny_renewal {
        match &record.spiffe_id {
            Some(id) => {
                let why = format!("certificate {serial} revoked ({reason})");
                let event = super::event("deny-identity", id, serde_json::json!({"reason": why}));
                store.deny_identity(id, &why, now, event).await?;
                message.push_str(&format!("; {id} is on the deny list"));
            }
            None => bail!("{message}, but it carries no SPIFFE ID to put on the deny list"),
        }
    }
    Ok(message)
}
