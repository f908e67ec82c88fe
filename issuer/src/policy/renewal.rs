//! mTLS renewal: a certificate presented to renew gets at most its own names again.

use std::net::IpAddr;

use canopy::spiffe::SpiffeId;

use super::decide::Ask;
use super::denial::{Denial, Rule};

/// The names of a certificate presented for renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// Its SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Its DNS names.
    pub dns_names: Vec<String>,
    /// Its IP addresses.
    pub ip_addresses: Vec<IpAddr>,
}

/// An mTLS renewal gets at most what the presented certificate carries: an identity
/// obtained with one credential never widens into another policy's names.
pub(super) fn check_renewal(presented: &Presented, ask: &Ask<'_>) -> Result<(), Denial> {
    let widens = |what: String| {
        Err(Denial::new(
            Rule::RenewalWidens,
            format!(
                "{what}: a renewal over mTLS gets at most the names of the certificate presented"
            ),
        ))
    };
    if ask.spiffe_id != presented.spiffe_id.as_ref() {
        let asked = ask
            .spiffe_id
            .map(ToString::to_string)
            .unwrap_or_else(|| "none".into());
        return widens(format!(
            "SPIFFE ID {asked} is not the presented certificate's"
        ));
    }
    for name in ask.dns_names {
        if !presented
            .dns_names
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
        {
            return widens(format!(
                "DNS name {name:?} is not in the presented certificate"
            ));
        }
    }
    for ip in ask.ip_addresses {
        if !presented.ip_addresses.contains(ip) {
            return widens(format!(
                "IP address {ip} is not in the presented certificate"
            ));
        }
    }
    Ok(())
}
