//! `tabos sql`: read-only SQL over every table of every partition and node.

use clap::Args;
use std::process::ExitCode;
use tabos_client::sql::{format_csv, format_json, format_table, table_names, QueryOptions};
use tabos_client::Client;

/// Run one read-only SQL statement (SQLite's dialect) over every table of every
/// partition on every node, and the system tables.
///
/// Tables: the services' tables (each with a `_partition` column naming the partition
/// a row came from) and sys_partitions, sys_connections, sys_procedures, sys_log,
/// sys_nodes; `tabos sql --tables` lists them. An equality on a partition key
/// (`_partition`, kv `key`, ipc `receiver_id`, a `/<user>/...` path or path prefix in
/// fs_directory.d_name / fs_localized_file.f_name) reads that partition only. Each
/// partition is read in chunks between its transactions; a query is not a snapshot
/// across chunks or partitions. Writes are refused: use the procedures.
///
/// Example: tabos sql "SELECT d_name, content, size_bytes FROM fs_directory ORDER BY
/// size_bytes DESC LIMIT 10"
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The statement (omit with --tables).
    #[arg(required_unless_present = "tables")]
    sql: Option<String>,
    /// Print CSV (RFC 4180, header line; NULL is an empty field) instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print a JSON array of objects keyed by column name instead of a table.
    #[arg(long)]
    json: bool,
    /// Rows per chunk read from a partition (1..=4096): the longest a query holds a
    /// partition is one chunk. Default 256.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    chunk_rows: u32,
    /// List the tables and exit.
    #[arg(long)]
    tables: bool,
}

pub fn run(client: &mut Client, args: SqlArgs) -> ExitCode {
    if args.tables {
        for (name, doc) in table_names() {
            println!("{name:<20} {doc}");
        }
        return ExitCode::SUCCESS;
    }
    let sql = args.sql.unwrap_or_default();
    let options = QueryOptions {
        chunk_rows: args.chunk_rows,
    };
    match client.query_with(&sql, options) {
        Ok(result) => {
            let text = if args.csv {
                format_csv(&result)
            } else if args.json {
                format_json(&result)
            } else {
                format_table(&result)
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tabos: {e}");
            ExitCode::from(1)
        }
    }
}
