//! Results: one [`Record`] per measured (workload, system, params), written as a JSON
//! array (`--json FILE`) and printed as a markdown table.
//!
//! JSON record: `{"workload", "system", "params", "p50_us", "p99_us", "p999_us",
//! "ops_per_s"}`; `params` is an object, and a figure that does not apply is `null`.

use crate::measure::Latencies;
use crate::Error;
use serde_json::{Map, Value};
use std::path::Path;

/// One measured result.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// What was measured, e.g. `invoke-null`.
    pub workload: String,
    /// Who served it, e.g. `tabos-shm` or a baseline such as `tcp-blocking`.
    pub system: String,
    /// How it was measured (counts, depth, timing method).
    pub params: Map<String, Value>,
    /// Median latency in microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile latency in microseconds.
    pub p99_us: Option<f64>,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: Option<f64>,
    /// Operations per second.
    pub ops_per_s: Option<f64>,
}

impl Record {
    /// A record with the latency figures of `latencies` and the given throughput.
    pub fn from_latencies(
        workload: &str,
        system: &str,
        params: Map<String, Value>,
        latencies: &Latencies,
        ops_per_s: Option<f64>,
    ) -> Record {
        Record {
            workload: workload.to_string(),
            system: system.to_string(),
            params,
            p50_us: latencies.p50_us(),
            p99_us: latencies.p99_us(),
            p999_us: latencies.p999_us(),
            ops_per_s,
        }
    }

    /// The record as a JSON object.
    pub fn to_json(&self) -> Value {
        let num = |x: Option<f64>| x.map_or(Value::Null, Value::from);
        let mut obj = Map::new();
        obj.insert("workload".into(), self.workload.clone().into());
        obj.insert("system".into(), self.system.clone().into());
        obj.insert("params".into(), Value::Object(self.params.clone()));
        obj.insert("p50_us".into(), num(self.p50_us));
        obj.insert("p99_us".into(), num(self.p99_us));
        obj.insert("p999_us".into(), num(self.p999_us));
        obj.insert("ops_per_s".into(), num(self.ops_per_s));
        Value::Object(obj)
    }
}

/// Build a params object from `(name, value)` pairs.
pub fn params<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Print a finished measurement's median and tail on stderr (progress output).
pub fn progress(record: &Record) {
    let mut line = format!(
        "    p50 {} µs, p99 {} µs, p99.9 {} µs",
        figure(record.p50_us),
        figure(record.p99_us),
        figure(record.p999_us)
    );
    if let Some(ops) = record.ops_per_s {
        line.push_str(&format!(", {} ops/s", figure(Some(ops))));
    }
    eprintln!("{line}");
}

/// Write `records` to `path` as a pretty-printed JSON array.
pub fn write_json(path: &Path, records: &[Record]) -> Result<(), Error> {
    let array = Value::Array(records.iter().map(Record::to_json).collect());
    let text = serde_json::to_string_pretty(&array).expect("JSON values always serialise");
    std::fs::write(path, text + "\n")
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn figure(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v >= 100_000.0 => format!("{v:.0}"),
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn params_text(params: &Map<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A markdown table of `records`: workload, system, params, p50, p99, p99.9, ops/s.
pub fn markdown_table(records: &[Record]) -> String {
    let mut out = String::from(
        "| workload | system | params | p50 µs | p99 µs | p99.9 µs | ops/s |\n\
         |---|---|---|---:|---:|---:|---:|\n",
    );
    for r in records {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.system,
            params_text(&r.params),
            figure(r.p50_us),
            figure(r.p99_us),
            figure(r.p999_us),
            figure(r.ops_per_s),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            workload: "invoke-null".into(),
            system: "tabos-shm".into(),
            params: params([("calls", 10.into()), ("timing", "per-call".into())]),
            p50_us: Some(0.5),
            p99_us: Some(1.25),
            p999_us: None,
            ops_per_s: Some(1_000_000.0),
        }
    }

    #[test]
    fn json_has_every_field_and_null_for_missing_figures() {
        let v = sample().to_json();
        assert_eq!(v["workload"], "invoke-null");
        assert_eq!(v["system"], "tabos-shm");
        assert_eq!(v["params"]["calls"], 10);
        assert_eq!(v["p50_us"], 0.5);
        assert!(v["p999_us"].is_null());
        assert_eq!(v["ops_per_s"], 1_000_000.0);
    }

    #[test]
    fn table_has_a_row_per_record() {
        let table = markdown_table(&[sample(), sample()]);
        assert_eq!(table.lines().count(), 4);
        assert!(table.contains("| invoke-null | tabos-shm | calls=10, timing=per-call | 0.500 |"));
    }
}
