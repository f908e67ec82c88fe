//! The printed result: one row per system, the ratios, the in-process ceiling, and a
//! `result ...` line per row that scripts (and the smoke test) read.

use std::fmt::Write;

use crate::ceiling::Ceiling;
use crate::load::Outcome;

/// One system's measured run.
#[derive(Clone, Debug)]
pub struct Row {
    /// Short key (`canopy-sqlite`, `canopy-postgres`, `openbao`).
    pub key: &'static str,
    /// What ran.
    pub system: String,
    /// Where it kept certificates.
    pub storage: String,
    /// What the load saw.
    pub outcome: Outcome,
    /// CPU seconds of the server (and its database server, if any) during the run.
    pub server_cpu: f64,
    /// CPU seconds of the load generator during the run.
    pub client_cpu: f64,
    /// Certificates found in storage afterwards vs. certificates answered.
    pub stored: String,
}

impl Row {
    fn per_thousand(&self, seconds: f64) -> f64 {
        if self.outcome.ok == 0 {
            return f64::NAN;
        }
        seconds / self.outcome.ok as f64 * 1000.0
    }
}

/// The whole report as text.
pub fn render(header: &str, rows: &[Row], ceiling: Option<Ceiling>, notes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(
        out,
        "{:<22} {:<44} {:>9} {:>7} {:>7} {:>11} {:>11} {:>7}  stored/answered",
        "system", "storage", "certs/s", "p50 ms", "p99 ms", "server CPU", "client CPU", "errors"
    );
    let _ = writeln!(
        out,
        "{:<22} {:<44} {:>9} {:>7} {:>7} {:>11} {:>11} {:>7}",
        "", "", "", "", "", "s/1000", "s/1000", ""
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<22} {:<44} {:>9.1} {:>7.2} {:>7.2} {:>11.3} {:>11.3} {:>7}  {}",
            row.system,
            row.storage,
            row.outcome.rate(),
            row.outcome.percentile_ms(50.0),
            row.outcome.percentile_ms(99.0),
            row.per_thousand(row.server_cpu),
            row.per_thousand(row.client_cpu),
            row.outcome.errors,
            row.stored,
        );
    }
    let bao = rows.iter().find(|r| r.key == "openbao");
    if let Some(bao) = bao {
        let _ = writeln!(out);
        for row in rows.iter().filter(|r| r.key != "openbao") {
            let target = if row.key == "canopy-sqlite" { 5.0 } else { 3.0 };
            let ratio = row.outcome.rate() / bao.outcome.rate().max(1e-9);
            let p99 = row.outcome.percentile_ms(99.0);
            let met = ratio >= target && p99 < 20.0;
            let _ = writeln!(
                out,
                "ratio {} / OpenBao: {ratio:.1}x certificates/s, {:.1}x less CPU per certificate \
                 (target >= {target}x with p99 < 20 ms: {})",
                row.key,
                bao.per_thousand(bao.server_cpu) / row.per_thousand(row.server_cpu),
                if met { "met" } else { "NOT met" },
            );
        }
    }
    if let Some(c) = ceiling {
        let _ = writeln!(
            out,
            "\nin-process ceiling, one core, canopy core only (no TLS/HTTP/JSON/storage):\n  \
             CSR parse + verify:                        {:>9.0} /s\n  \
             CSR parse + verify + sign + parse-back check: {:>6.0} /s",
            c.verify_per_sec, c.verify_and_sign_per_sec
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    let _ = writeln!(out);
    for row in rows {
        let _ = writeln!(
            out,
            "result system={} certs_per_sec={:.1} p50_ms={:.2} p99_ms={:.2} cpu_s_per_1000={:.3} ok={} errors={}",
            row.key,
            row.outcome.rate(),
            row.outcome.percentile_ms(50.0),
            row.outcome.percentile_ms(99.0),
            row.per_thousand(row.server_cpu),
            row.outcome.ok,
            row.outcome.errors,
        );
    }
    if let Some(c) = ceiling {
        let _ = writeln!(
            out,
            "result system=ceiling verify_per_sec={:.0} verify_sign_per_sec={:.0}",
            c.verify_per_sec, c.verify_and_sign_per_sec
        );
    }
    out
}
