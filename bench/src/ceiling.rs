//! The in-process ceiling: what one core does with canopy's core and nothing else
//! (no TLS, no HTTP, no JSON, no storage): CSR parse + signature check, then
//! plan, sign and parse-back check of the certificate.

use std::time::{Duration, Instant};

use canopy::csr::Csr;
use canopy::profile::{LeafProfile, LeafRequest};
use canopy::spiffe::{SpiffeId, TrustDomain};
use canopy::ttl::Ttl;
use canopy::CertificateAuthority;

use crate::canopy_side::BenchCa;
use crate::workload::WorkloadCsr;

/// Operations per second of each step on one thread.
#[derive(Clone, Copy, Debug)]
pub struct Ceiling {
    /// `Csr::from_pem` alone (parse + verify the CSR's signature).
    pub verify_per_sec: f64,
    /// `Csr::from_pem` + `CertificateAuthority::issue_for_csr`.
    pub verify_and_sign_per_sec: f64,
}

fn per_second(duration: Duration, mut op: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < duration {
        for _ in 0..16 {
            op(done);
            done += 1;
        }
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// Measures each step for `duration` on the calling thread.
pub fn measure(ca: &BenchCa, csrs: &[WorkloadCsr], duration: Duration) -> anyhow::Result<Ceiling> {
    let verify_per_sec = per_second(duration, |i| verify_one(csrs, i));
    let verify_and_sign_per_sec = verify_and_sign_rate(&ca.intermediate, csrs, duration)?;
    Ok(Ceiling {
        verify_per_sec,
        verify_and_sign_per_sec,
    })
}

/// Runs each step exactly `n` times: under callgrind, the inclusive cost of
/// [`verify_steps`] and [`verify_and_sign_steps`] divided by `n` is the cost of one.
pub fn run_fixed(ca: &BenchCa, csrs: &[WorkloadCsr], n: usize) -> anyhow::Result<()> {
    let signing = Signing::new(&ca.intermediate, csrs)?;
    verify_steps(csrs, n);
    verify_and_sign_steps(&signing, n);
    Ok(())
}

#[inline(never)]
fn verify_steps(csrs: &[WorkloadCsr], n: usize) {
    for i in 0..n {
        verify_one(csrs, i);
    }
}

#[inline(never)]
fn verify_and_sign_steps(signing: &Signing<'_>, n: usize) {
    for i in 0..n {
        signing.one(i);
    }
}

fn verify_one(csrs: &[WorkloadCsr], i: usize) {
    let csr = Csr::from_pem(&csrs[i % csrs.len()].pem).expect("the CSRs parse");
    std::hint::black_box(csr);
}

/// A CA, the CSRs and one request per CSR, checked once before anything is measured.
struct Signing<'a> {
    ca: &'a CertificateAuthority,
    csrs: &'a [WorkloadCsr],
    requests: Vec<LeafRequest>,
    now: time::OffsetDateTime,
}

impl<'a> Signing<'a> {
    fn new(ca: &'a CertificateAuthority, csrs: &'a [WorkloadCsr]) -> anyhow::Result<Self> {
        let td: TrustDomain = crate::canopy_side::TRUST_DOMAIN.parse()?;
        let requests: Vec<LeafRequest> = csrs
            .iter()
            .map(|c| {
                Ok(LeafRequest {
                    spiffe_id: Some(c.uri.parse::<SpiffeId>()?),
                    trust_domain: Some(td.clone()),
                    ttl: Some(Ttl::hours(1)),
                    clamp_to_issuer: true,
                    ..LeafRequest::new(LeafProfile::Workload)
                })
            })
            .collect::<anyhow::Result<_>>()?;
        // One real issue first, so a broken setup fails loudly instead of measuring errors.
        let csr = Csr::from_pem(&csrs[0].pem)?;
        let now = time::OffsetDateTime::now_utc();
        ca.issue_for_csr(&csr, &requests[0], now)?;
        Ok(Self {
            ca,
            csrs,
            requests,
            now,
        })
    }

    fn one(&self, i: usize) {
        let k = i % self.csrs.len();
        let csr = Csr::from_pem(&self.csrs[k].pem).expect("the CSR verified before");
        let issued = self
            .ca
            .issue_for_csr(&csr, &self.requests[k], self.now)
            .expect("the request signed before");
        std::hint::black_box(issued);
    }
}

/// CSR verify + `issue_for_csr` per second with `ca` for `duration` on the calling thread.
pub fn verify_and_sign_rate(
    ca: &CertificateAuthority,
    csrs: &[WorkloadCsr],
    duration: Duration,
) -> anyhow::Result<f64> {
    let signing = Signing::new(ca, csrs)?;
    Ok(per_second(duration, |i| signing.one(i)))
}
