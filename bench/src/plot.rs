//! SVG charts in the shape of the paper's figures, drawn from the JSON records of a
//! run (`--plots DIR`): figure 5 (scheduler latency against throughput), 6-8 (IPC
//! throughput), 10 (filesystem blocks per second) and 11-12 (parallel-file
//! throughput against clients and nodes). One line per system; y axes are
//! logarithmic because tabos and its baselines differ by orders of magnitude.

use crate::report::Record;
use crate::Error;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Points of one line, by series name.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// One chart to draw.
struct Chart<'a> {
    file: String,
    title: String,
    x_label: &'a str,
    y_label: &'a str,
    series: Series,
}

fn param_f64(record: &Record, key: &str) -> Option<f64> {
    record.params.get(key)?.as_f64()
}

fn param_str(record: &Record, key: &str) -> Option<String> {
    record.params.get(key)?.as_str().map(str::to_string)
}

/// Collect `(x, y)` points of the records `keep` selects, one series per `name`.
fn collect(
    records: &[Record],
    keep: impl Fn(&Record) -> bool,
    name: impl Fn(&Record) -> String,
    x: impl Fn(&Record) -> Option<f64>,
    y: impl Fn(&Record) -> Option<f64>,
) -> Series {
    let mut series = Series::new();
    for r in records.iter().filter(|r| keep(r)) {
        if let (Some(x), Some(y)) = (x(r), y(r)) {
            if y > 0.0 {
                series.entry(name(r)).or_default().push((x, y));
            }
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// The charts the records support.
fn charts(records: &[Record]) -> Vec<Chart<'static>> {
    let mut out = Vec::new();
    let system = |r: &Record| r.system.clone();
    let policy_system = |r: &Record| match param_str(r, "policy") {
        Some(p) => format!("{} {p}", r.system),
        None => r.system.clone(),
    };
    for (quantile, pick) in [("p50", 0), ("p99", 1)] {
        out.push(Chart {
            file: format!("fig5-sched-{quantile}.svg"),
            title: format!("Figure 5: scheduler {quantile} latency against throughput"),
            x_label: "throughput (tasks/s)",
            y_label: "latency (µs)",
            series: collect(
                records,
                |r| r.workload.starts_with("sched-") && r.workload.ends_with("-open"),
                policy_system,
                |r| r.ops_per_s,
                move |r| if pick == 0 { r.p50_us } else { r.p99_us },
            ),
        });
    }
    let mut sizes: Vec<u64> = records
        .iter()
        .filter(|r| r.workload.starts_with("ipc-ping"))
        .filter_map(|r| param_f64(r, "message_bytes").map(|b| b as u64))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for (workload, figure) in [("ipc-pingpong", 6), ("ipc-ping20pong20", 7)] {
        for &bytes in &sizes {
            out.push(Chart {
                file: format!("fig{figure}-{workload}-{bytes}B.svg"),
                title: format!("Figure {figure}: {workload}, {bytes}-byte messages"),
                x_label: "concurrent sender/receiver pairs",
                y_label: "throughput (messages/s)",
                series: collect(
                    records,
                    |r| {
                        r.workload == workload
                            && param_f64(r, "message_bytes") == Some(bytes as f64)
                    },
                    system,
                    |r| param_f64(r, "pairs"),
                    |r| r.ops_per_s,
                ),
            });
        }
    }
    out.push(Chart {
        file: "fig8-ipc-multicast.svg".into(),
        title: "Figure 8: multicast of a 64-byte message".into(),
        x_label: "receivers",
        y_label: "throughput (rounds/s)",
        series: collect(
            records,
            |r| r.workload == "ipc-multicast",
            system,
            |r| param_f64(r, "receivers"),
            |r| r.ops_per_s,
        ),
    });
    for (workload, figure) in [("fs-10a", "10a"), ("fs-10b", "10b")] {
        out.push(Chart {
            file: format!("fig{figure}-{workload}.svg"),
            title: format!("Figure {figure}: blocks per second ({workload})"),
            x_label: "clients",
            y_label: "blocks/s",
            series: collect(
                records,
                |r| r.workload == workload,
                |r| match param_str(r, "op") {
                    Some(op) => format!("{} {op}", r.system),
                    None => r.system.clone(),
                },
                |r| param_f64(r, "clients"),
                |r| r.ops_per_s,
            ),
        });
    }
    let max_nodes = records
        .iter()
        .filter(|r| r.workload.starts_with("pfs-"))
        .filter_map(|r| param_f64(r, "nodes"))
        .fold(0.0, f64::max);
    out.push(Chart {
        file: "fig11-pfs-clients.svg".into(),
        title: format!("Figure 11: parallel files, {max_nodes} node(s), 8 KiB blocks"),
        x_label: "clients",
        y_label: "throughput (MiB/s)",
        series: collect(
            records,
            |r| r.workload.starts_with("pfs-") && param_f64(r, "nodes") == Some(max_nodes),
            |r| r.workload.trim_start_matches("pfs-").to_string(),
            |r| param_f64(r, "clients"),
            |r| param_f64(r, "mib_per_s"),
        ),
    });
    out.push(Chart {
        file: "fig12-pfs-nodes.svg".into(),
        title: "Figure 12: parallel files, one client, against nodes".into(),
        x_label: "nodes",
        y_label: "throughput (MiB/s)",
        series: collect(
            records,
            |r| r.workload.starts_with("pfs-") && param_f64(r, "clients") == Some(1.0),
            |r| r.workload.trim_start_matches("pfs-").to_string(),
            |r| param_f64(r, "nodes"),
            |r| param_f64(r, "mib_per_s"),
        ),
    });
    out.retain(|c| !c.series.is_empty());
    out
}

fn draw(dir: &Path, chart: &Chart<'_>) -> Result<PathBuf, String> {
    let path = dir.join(&chart.file);
    let points = chart.series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 == x1 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let (y0, y1) = (y0 / 2.0, y1 * 2.0);
    let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
        .map_err(|e| e.to_string())?;
    plot.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        plot.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        plot.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    plot.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    drop(plot);
    drop(root);
    Ok(path)
}

/// Draw every chart the records support into `dir`; returns the files written.
pub fn write_all(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = Vec::new();
    for chart in charts(records) {
        let path =
            draw(dir, &chart).map_err(|e| Error::call(format!("drawing {}", chart.file), e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::params;

    fn record(workload: &str, system: &str, pairs: u32, ops: f64) -> Record {
        Record {
            workload: workload.into(),
            system: system.into(),
            params: params([("pairs", pairs.into()), ("message_bytes", 64.into())]),
            p50_us: Some(5.0),
            p99_us: Some(9.0),
            p999_us: None,
            ops_per_s: Some(ops),
        }
    }

    #[test]
    fn charts_are_drawn_from_records() {
        let records = vec![
            record("ipc-pingpong", "tabos-shm", 1, 170_000.0),
            record("ipc-pingpong", "tabos-shm", 2, 250_000.0),
            record("ipc-pingpong", "grpc", 1, 9_000.0),
        ];
        let dir = std::env::temp_dir().join(format!("tabos-plot-test-{}", std::process::id()));
        let files = write_all(&dir, &records).unwrap();
        assert_eq!(files.len(), 1, "only figure 6 has data");
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("tabos-shm") && svg.contains("grpc"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
