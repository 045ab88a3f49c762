//! Query results as text: an aligned table, CSV or JSON.

use super::{QueryResult, Value};

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("x'{hex}'")
        }
    }
}

/// Columns padded to their widest cell (numbers right-aligned), a rule under the
/// header, and a row count.
pub fn format_table(result: &QueryResult) -> String {
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|r| r.iter().map(|v| cell(v).replace('\n', "\\n")).collect())
        .collect();
    let mut widths: Vec<usize> = result.columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, items: &[String], numeric: &[bool]| {
        let parts: Vec<String> = items
            .iter()
            .zip(&widths)
            .zip(numeric)
            .map(|((s, &w), &num)| {
                if num {
                    format!("{s:>w$}")
                } else {
                    format!("{s:<w$}")
                }
            })
            .collect();
        out.push_str(parts.join(" | ").trim_end());
        out.push('\n');
    };
    let no_numbers = vec![false; widths.len()];
    line(&mut out, &result.columns, &no_numbers);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for (row, values) in cells.iter().zip(&result.rows) {
        let numeric: Vec<bool> = values
            .iter()
            .map(|v| matches!(v, Value::Integer(_) | Value::Real(_)))
            .collect();
        line(&mut out, row, &numeric);
    }
    let n = result.rows.len();
    out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
    out
}

/// RFC 4180 CSV with a header line; NULL is an empty field.
pub fn format_csv(result: &QueryResult) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let header: Vec<String> = result.columns.iter().map(|c| quote(c)).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in &result.rows {
        let fields: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => quote(&cell(other)),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A JSON array of objects, one per row, keyed by column name in column order (blobs
/// as `x'..'` hex strings).
pub fn format_json(result: &QueryResult) -> String {
    use serde_json::Value as J;
    let mut out = String::from("[");
    for (i, row) in result.rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
        for (j, (name, v)) in result.columns.iter().zip(row).enumerate() {
            let value = match v {
                Value::Null => J::Null,
                Value::Integer(i) => J::from(*i),
                Value::Real(f) => J::from(*f),
                Value::Text(s) => J::from(s.clone()),
                Value::Blob(_) => J::from(cell(v)),
            };
            if j > 0 {
                out.push_str(", ");
            }
            out.push_str(&J::from(name.clone()).to_string());
            out.push_str(": ");
            out.push_str(&value.to_string());
        }
        out.push('}');
    }
    out.push_str(if result.rows.is_empty() {
        "]\n"
    } else {
        "\n]\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::ScanCounters;

    fn sample() -> QueryResult {
        QueryResult {
            columns: vec!["name".into(), "size".into()],
            rows: vec![
                vec![Value::Text("a,b".into()), Value::Integer(10)],
                vec![Value::Null, Value::Integer(2000)],
            ],
            scans: ScanCounters::default(),
        }
    }

    #[test]
    fn table_aligns_and_counts() {
        let t = format_table(&sample());
        assert_eq!(
            t,
            "name | size\n-----+-----\na,b  |   10\nNULL | 2000\n(2 rows)\n"
        );
    }

    #[test]
    fn csv_quotes_and_json_keys_by_column() {
        assert_eq!(
            format_csv(&sample()),
            "name,size\r\n\"a,b\",10\r\n,2000\r\n"
        );
        let j: serde_json::Value = serde_json::from_str(&format_json(&sample())).unwrap();
        assert_eq!(j[0]["name"], "a,b");
        assert_eq!(j[1]["size"], 2000);
        assert!(j[1]["name"].is_null());
    }
}
