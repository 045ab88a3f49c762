//! `tabos sql`: read-only SQL over every table of every partition and node.

use clap::Args;
use std::process::ExitCode;
use tabos_client::sql::{format_csv, format_json, format_table, table_names, QueryOptions};
use tabos_client::Client;

/// The flags of `tabos sql` (its help text is on the subcommand in main.rs).
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
    /// Most result rows (they are held in memory); a query with more fails and says
    /// so. Default 1000000.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows: u64,
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
        result_rows_max: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
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
