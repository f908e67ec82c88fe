//! A server process under test: started with its output in a log file, stopped
//! (SIGTERM, then SIGKILL) when dropped, so no run leaves one behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// A running server.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `command`, its stderr going to `log`, and waits up to `timeout` for a
    /// stdout line containing `marker`; returns the server and that line.
    pub fn start(
        name: &'static str,
        mut command: Command,
        log: &Path,
        marker: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Server, String)> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut server = Server {
            name,
            child,
            log: log.to_path_buf(),
        };
        let (found, wait) = mpsc::channel();
        let marker = marker.to_string();
        // Reads stdout to the end so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains(&marker) {
                    let _ = found.send(line);
                    sent = true;
                }
            }
        });
        let started = Instant::now();
        loop {
            match wait.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => return Ok((server, line)),
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < timeout => {
                    if let Some(status) = server.child.try_wait()? {
                        bail!("{name} exited with {status}: {}", server.log_tail());
                    }
                }
                Err(_) => {
                    bail!(
                        "{name} did not become ready within {timeout:?}: {}",
                        server.log_tail()
                    )
                }
            }
        }
    }

    /// Starts `command` with stdout and stderr going to `log`, for servers that say
    /// nothing useful on stdout; the caller waits for readiness its own way.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> anyhow::Result<Server> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Server {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}: {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The server's process id (whose CPU time is measured).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        format!("(log {}):\n{tail}", self.log.display())
    }

    /// Stops the server: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child
            .kill()
            .map_err(|e| anyhow!("killing {}: {e}", self.name))?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A free TCP port on 127.0.0.1 whose successor is free too (OpenBao's dev server
/// puts its cluster listener on port + 1).
pub fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free pair of ports on 127.0.0.1")
}

/// Waits until `endpoint` answers a GET with any HTTP status (the listener is up),
/// failing early with the log's tail if the server exits.
pub async fn wait_answering(
    server: &mut Server,
    endpoint: &crate::load::Endpoint,
) -> anyhow::Result<hyper::StatusCode> {
    let started = Instant::now();
    loop {
        server.check_running()?;
        match endpoint.call(hyper::Method::GET, "").await {
            Ok((status, _)) => return Ok(status),
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                bail!(
                    "{} did not answer within 60 s ({e:#}): {}",
                    server.name,
                    server.log_tail()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
