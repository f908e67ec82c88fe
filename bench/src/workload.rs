//! The requests both systems get: pre-generated ECDSA P-256 CSRs, each with one
//! SPIFFE URI SAN and no subject, rendered once into request bodies so the load
//! generator spends no time building them.

use anyhow::Context;
use hyper::body::Bytes;

/// One workload's signing request.
#[derive(Clone, Debug)]
pub struct WorkloadCsr {
    /// The CSR, PEM.
    pub pem: String,
    /// The SPIFFE ID it asks for.
    pub uri: String,
}

/// A rendered request body and the SPIFFE ID the certificate must carry.
#[derive(Clone, Debug)]
pub struct Body {
    /// What is sent.
    pub bytes: Bytes,
    /// What the answer's certificate must name.
    pub uri: String,
}

/// Makes `count` CSRs for `spiffe://TRUST_DOMAIN/ns/bench/sa/wN`.
pub fn generate(count: usize, trust_domain: &str) -> anyhow::Result<Vec<WorkloadCsr>> {
    (0..count)
        .map(|i| {
            let uri = format!("spiffe://{trust_domain}/ns/bench/sa/w{i}");
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("generating a P-256 key")?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.clone().try_into()?)];
            let pem = params.serialize_request(&key)?.pem()?;
            Ok(WorkloadCsr { pem, uri })
        })
        .collect()
}

/// Renders `template` for each CSR: `{csr}` becomes the PEM (JSON-escaped, without
/// quotes) and `{uri}` the SPIFFE ID.
pub fn render(template: &str, csrs: &[WorkloadCsr]) -> Vec<Body> {
    csrs.iter()
        .map(|c| {
            let quoted = serde_json::to_string(&c.pem).expect("a string serialises");
            let escaped = &quoted[1..quoted.len() - 1];
            let text = template.replace("{csr}", escaped).replace("{uri}", &c.uri);
            Body {
                bytes: Bytes::from(text),
                uri: c.uri.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrs_verify_and_carry_their_spiffe_id() {
        let csrs = generate(2, "bench.example").unwrap();
        for c in &csrs {
            let parsed = canopy::csr::Csr::from_pem(&c.pem).unwrap();
            assert_eq!(parsed.uris(), std::slice::from_ref(&c.uri));
        }
        let bodies = render(r#"{"csr":"{csr}","uri_sans":"{uri}"}"#, &csrs);
        let v: serde_json::Value = serde_json::from_slice(&bodies[1].bytes).unwrap();
        assert_eq!(v["csr"], csrs[1].pem);
        assert_eq!(v["uri_sans"], csrs[1].uri);
    }
}
