//! A real PostgreSQL server stopped and started again while the issuer signs under load:
//! the issuer answers 503 `storage_unavailable` (with Retry-After) while the database is
//! down, recovers by itself once it is back, and every certificate a client received
//! is recorded.
//!
//! The test runs its own PostgreSQL cluster (initdb + pg_ctl on a free port), never the
//! shared server on 127.0.0.1:5432 that other tests use.
//!
//! While PostgreSQL is down a batch of sign requests fails together as soon as the
//! pool gives up on a connection (its acquire timeout, 5 s), so the outage lasts until
//! at least one 503 has been answered. For investigation:
//! `PG_RESTART_OUTAGE_SECS=N` keeps PostgreSQL down at least N seconds and
//! `PG_RESTART_TIMELINE=1` prints every answer around the outage and the issuer's warnings.

use std::collections::{BTreeMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const PG_MISSING: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found under \
/usr/lib/postgresql/*/bin: run tests/run.sh, which installs PostgreSQL, then run this test again";

/// A private PostgreSQL cluster, stopped (immediately) on drop.
struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL must run as the `postgres` user.
    as_postgres: bool,
    // Dropped after `drop` has stopped the server.
    _tmp: tempfile::TempDir,
}

/// The newest /usr/lib/postgresql/VERSION/bin holding initdb and pg_ctl.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<f64>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
                .then_some(((version * 100.0) as u32, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = pg_bin_dir().unwrap_or_else(|| panic!("{PG_MISSING}"));
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pg");
        std::fs::create_dir(&root).unwrap();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            // The postgres user must reach its directory inside our private tempdir.
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let o = Command::new("chown")
                .args(["-R", "postgres", root.to_str().unwrap()])
                .output()
                .expect("run chown");
            assert!(
                o.status.success(),
                "chown postgres {}: {}",
                root.display(),
                output_text(&o)
            );
        }
        let cluster = PgCluster {
            bin,
            data: root.join("data"),
            log: root.join("server.log"),
            port: free_port(),
            as_postgres,
            _tmp: tmp,
        };
        let o = cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(o.status.success(), "initdb failed: {}", output_text(&o));
        cluster.pg_ctl_start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs a server binary, as the postgres user when we are root.
    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir("/")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }

    fn pg_ctl_start(&self) {
        let sock = self.data.parent().unwrap();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            sock.display()
        );
        let o = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start failed: {}\nserver log:\n{}",
            output_text(&o),
            self.server_log()
        );
    }

    fn pg_ctl_stop(&self, mode: &str) -> std::process::Output {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn accepting_tcp(&self) -> bool {
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().unwrap(),
            Duration::from_secs(1),
        )
        .is_ok()
    }

    /// `psql -tAc SQL` against this cluster (as a client: no need to be postgres).
    fn psql(&self, sql: &str) -> (bool, String) {
        let port = self.port.to_string();
        let o = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ])
            .output()
            .expect("run psql");
        (o.status.success(), output_text(&o))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
    }
}

/// One answer (or transport failure) seen by a load thread.
struct Event {
    start: Instant,
    end: Instant,
    /// None: the request failed below HTTP.
    status: Option<u16>,
    code: String,
    retry_after: bool,
    serial: Option<String>,
    detail: String,
}

#[test]
fn pg_stop_start_under_load_503s_then_recovers_and_loses_nothing() {
    let pg = PgCluster::start();
    eprintln!(
        "private PostgreSQL {} on 127.0.0.1:{} (as postgres user: {})",
        pg.bin.display(),
        pg.port,
        pg.as_postgres
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issuer = Configured::new(dir, &pg.url(), "  burst: 100000\n  rate_per_second: 100000");
    let (config_s, token) = (issuer.config.as_str(), issuer.token.clone());
    let (mut server, client) = issuer.serve(dir);

    // CSRs made up front so the load is all signing; reused (serials are fresh).
    const THREADS: usize = 6;
    let csrs: Arc<Vec<String>> = Arc::new(
        (0..60)
            .map(|i| csr(Some(&format!("spiffe://{TD}/ns/pgrestart/sa/w{i}")), &[]).pem)
            .collect(),
    );
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, token, events, stop, csrs) = (
                client.clone(),
                token.clone(),
                events.clone(),
                stop.clone(),
                csrs.clone(),
            );
            std::thread::spawn(move || {
                let auth = format!("Bearer {token}");
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"csr": csrs[i % csrs.len()]}).to_string();
                    i += THREADS;
                    let start = Instant::now();
                    let r = client.try_request(
                        "POST",
                        "/v1/sign",
                        &[
                            ("Authorization", auth.as_str()),
                            ("Content-Type", "application/json"),
                        ],
                        Some(body.as_bytes()),
                    );
                    let end = Instant::now();
                    let event = match r {
                        Ok(r) => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&r.body).unwrap_or_default();
                            Event {
                                start,
                                end,
                                status: Some(r.status),
                                code: v["code"].as_str().unwrap_or_default().to_string(),
                                retry_after: r.header("retry-after").is_some(),
                                serial: (r.status == 200).then(|| {
                                    v["serial"]
                                        .as_str()
                                        .unwrap_or_else(|| panic!("200 without serial: {v}"))
                                        .to_string()
                                }),
                                detail: r.text().chars().take(300).collect(),
                            }
                        }
                        Err(e) => Event {
                            start,
                            end,
                            status: None,
                            code: String::new(),
                            retry_after: false,
                            serial: None,
                            detail: e.to_string(),
                        },
                    };
                    let failed = event.status != Some(200);
                    events.lock().unwrap().push(event);
                    if failed {
                        // A client honouring Retry-After would wait longer; keep the
                        // pressure on, but do not spin.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    let ok_count = |since: Instant| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.status == Some(200) && e.start >= since)
            .count()
    };
    wait_for(60, || ok_count(t0) >= 30, "30 certificates before the stop");
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));

    // Stop the server for real.
    let stop_begin = Instant::now();
    let o = pg.pg_ctl_stop("fast");
    let stop_done = Instant::now();
    assert!(
        o.status.success(),
        "pg_ctl stop: {}\n{}",
        output_text(&o),
        pg.server_log()
    );
    assert!(
        !pg.accepting_tcp(),
        "PostgreSQL still accepts connections after pg_ctl stop"
    );
    std::thread::sleep(Duration::from_secs(2));
    // While it is down, the issuer is alive but not ready.
    let probe = Instant::now();
    let ready = client.get("/readyz", &[]);
    let ready_took = probe.elapsed();
    let probe = Instant::now();
    let health = client.get("/healthz", &[]);
    let health_took = probe.elapsed();
    // Bounded: the outage lasts until the issuer has answered 503 at least once while
    // PostgreSQL was down (requests queue behind the recorder's retries, see below).
    let min_outage: u64 = std::env::var("PG_RESTART_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(min_outage).saturating_sub(stop_done.elapsed()));
    wait_for(
        60,
        || {
            events
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.end >= stop_done && e.status == Some(503))
        },
        "a 503 answer while PostgreSQL is stopped",
    );
    let start_begin = Instant::now();
    pg.pg_ctl_start();
    let start_done = Instant::now();

    // Recovers without restarting the issuer.
    wait_for(
        30,
        || ok_count(start_done) >= 1,
        "a signed certificate after PostgreSQL started again",
    );
    let recovered = Instant::now();
    wait_for(
        30,
        || ok_count(start_done) >= 30,
        "30 certificates after PostgreSQL started again",
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let events = std::mem::take(&mut *events.lock().unwrap());

    // Classify by when each request was sent and answered.
    let (mut ok_before, mut ok_transition, mut ok_during, mut ok_after) = (0, 0, 0, 0);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut first_503: Option<Instant> = None;
    let mut n503_while_stopped = 0;
    for e in &events {
        match e.status {
            Some(200) => {
                if e.end < stop_begin {
                    ok_before += 1;
                } else if e.start >= stop_done && e.end < start_begin {
                    ok_during += 1;
                } else if e.start >= start_done {
                    ok_after += 1;
                } else {
                    ok_transition += 1;
                }
            }
            status => {
                let key = match status {
                    Some(s) => format!("{s} {}", e.code),
                    None => "transport error".to_string(),
                };
                *failures.entry(key).or_default() += 1;
                let good = status == Some(503) && e.code == "storage_unavailable" && e.retry_after;
                if !good {
                    bad.push(format!(
                        "t+{:?}..t+{:?} status {status:?} code {:?} retry-after {}: {}",
                        e.start - t0,
                        e.end - t0,
                        e.code,
                        e.retry_after,
                        e.detail
                    ));
                }
                if status == Some(503) {
                    if e.end >= stop_done && e.end < start_begin {
                        n503_while_stopped += 1;
                    }
                    if first_503.is_none_or(|f| e.end < f) {
                        first_503 = Some(e.end);
                    }
                }
            }
        }
    }
    // Requests that overlapped the outage in any way.
    let slowest_around_outage = events
        .iter()
        .filter(|e| e.end >= stop_begin && e.start < start_done)
        .map(|e| e.end - e.start)
        .max();
    eprintln!(
        "requests: {} | ok before stop: {ok_before}, ok across stop/start: {ok_transition}, \
         ok while stopped: {ok_during}, ok after start: {ok_after}",
        events.len()
    );
    eprintln!(
        "non-200 answers by status and code: {failures:?} ({n503_while_stopped} 503s answered \
         while PostgreSQL was stopped)"
    );
    eprintln!(
        "pg_ctl stop took {:?}; outage (stop done -> start begun) {:?}; first 503 {:?} after stop began; \
         slowest request overlapping the outage {:?}",
        stop_done - stop_begin,
        start_begin - stop_done,
        first_503.map(|f| f.saturating_duration_since(stop_begin)),
        slowest_around_outage
    );
    eprintln!(
        "pg_ctl start took {:?}; first certificate {:?} after the server accepted connections again",
        start_done - start_begin,
        recovered - start_done
    );
    eprintln!(
        "while stopped: /readyz {} {} (in {ready_took:?}), /healthz {} (in {health_took:?})",
        ready.status,
        ready.text(),
        health.status
    );
    if std::env::var_os("PG_RESTART_TIMELINE").is_some() {
        eprintln!(
            "timeline: stop t+{:?}..t+{:?}, start t+{:?}..t+{:?}",
            stop_begin - t0,
            stop_done - t0,
            start_begin - t0,
            start_done - t0
        );
        for e in events
            .iter()
            .filter(|e| e.end >= stop_begin && e.start < start_done)
        {
            eprintln!(
                "  t+{:?}..t+{:?} {:?} {} {}",
                e.start - t0,
                e.end - t0,
                e.status,
                e.code,
                e.serial.as_deref().unwrap_or("")
            );
        }
        for line in server.log().lines().filter(|l| !l.contains(" INFO ")) {
            eprintln!("  issuer: {line}");
        }
    }

    assert_eq!(ready.status, 503, "/readyz while PostgreSQL is stopped");
    assert_eq!(health.status, 200, "/healthz while PostgreSQL is stopped");
    assert!(ok_before > 0 && ok_after > 0);
    assert!(server.alive(), "the issuer exited; log:\n{}", server.log());
    assert_eq!(
        client.get("/readyz", &[]).status,
        200,
        "/readyz after recovery"
    );

    // Every certificate a client received is recorded, each serial once.
    let received: Vec<&str> = events.iter().filter_map(|e| e.serial.as_deref()).collect();
    let unique: HashSet<&str> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a serial was returned twice");
    let (ok, out) = pg.psql("SELECT serial, requester FROM certificates");
    assert!(ok, "psql: {out}");
    let stored: BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .collect();
    // Recorded but never returned with 200: the issuer's own listener certificate, and
    // any sign request whose commit went through although its caller got an error.
    let (own, unanswered) = stored
        .iter()
        .filter(|(serial, _)| !unique.contains(*serial))
        .fold((0, 0), |(own, other), (_, requester)| {
            if *requester == "canopy-issuer" {
                (own + 1, other)
            } else {
                (own, other + 1)
            }
        });
    let missing: Vec<&&str> = received
        .iter()
        .filter(|s| !stored.contains_key(**s))
        .collect();
    eprintln!(
        "certificates received by clients: {}, recorded in PostgreSQL: {} (not returned with \
         200: {own} listener certificate(s) of the issuer, {unanswered} from sign requests)",
        received.len(),
        stored.len(),
    );
    assert!(
        missing.is_empty(),
        "{} certificate(s) returned with 200 are not recorded: {missing:?}",
        missing.len()
    );
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", config_s]);
    assert!(ok, "audit verify after the restart: {out}{err}");
    eprintln!("audit verify: {}", out.trim());
    assert!(
        bad.is_empty(),
        "answers other than 200 or 503 storage_unavailable with Retry-After:\n{}\nissuer log:\n{}",
        bad.join("\n"),
        server.log()
    );
}
