//! `tabos-bench`: run tabos benchmarks with their baselines and report medians, tails
//! and ratios. See `tabos-bench --help`.

#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tabos_bench::invoke::{self, InvokeConfig};
use tabos_bench::machine::Machine;
use tabos_bench::report::{self, Record};
use tabos_bench::server::TABOSD_ENV;
use tabos_bench::{Error, Settings};

/// tabos-bench: measure tabos against baselines measured in the same run, on the same
/// cores. Starts its own tabosd (one partition on --server-core) unless --connect is
/// given, and always stops it again. Prints the machine, progress on stderr, and a
/// markdown table of medians and tails with ratios to the baselines.
#[derive(Parser, Debug)]
#[command(name = "tabos-bench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    workload: Workload,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// Tiny configuration that finishes in a few seconds, for CI smoke tests. Fails
    /// only when a workload errors, never on speed. Default: off (full configuration).
    #[arg(long, global = true)]
    quick: bool,

    /// Also write the results to FILE as a JSON array of records {"workload",
    /// "system", "params", "p50_us", "p99_us", "p999_us", "ops_per_s"} (latencies in
    /// microseconds, throughput in operations per second, null where a figure does not
    /// apply). Default: no file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Use the tabosd already serving the Unix socket at PATH instead of starting one
    /// (its partition 0 is called). Default: start a private tabosd.
    #[arg(long, global = true, value_name = "PATH")]
    connect: Option<PathBuf>,

    /// tabosd binary to start. Default: `tabosd` in the directory of this executable
    /// (build it with `cargo build --release -p tabos-server`).
    #[arg(long, global = true, value_name = "PATH", env = TABOSD_ENV)]
    tabosd: Option<PathBuf>,

    /// Core (CPU number) the measuring client thread is pinned to. Default: 0.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    client_core: usize,

    /// Core (CPU number) of the server side: the started tabosd's partition, and the
    /// baselines' server threads. Must differ from --client-core so that both sides
    /// spin on their own core. Default: 1.
    #[arg(long, global = true, value_name = "N", default_value_t = 1)]
    server_core: usize,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Null procedure calls: sequential round trips and pipelined calls over the
    /// shared-memory rings, against a getppid syscall and a loopback TCP echo round
    /// trip. Full run: about 40 s; --quick: a few seconds.
    Invoke(InvokeArgs),
}

#[derive(Args, Debug)]
struct InvokeArgs {
    /// Timed sequential null calls. Default: 2000000 (--quick: 20000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    calls: Option<u64>,

    /// Pipeline depths (calls kept in flight), comma-separated. Default: 1,8,64.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=4096))]
    depths: Option<Vec<u64>>,

    /// Seconds each pipeline depth is timed (after an untimed warm-up of a fifth of
    /// that). Default: 5 (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_depth: Option<f64>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.001..=3600.0).contains(&s) {
        return Err(format!("{s} s is outside 0.001..=3600"));
    }
    Ok(s)
}

impl GlobalArgs {
    fn settings(&self) -> Result<Settings, String> {
        if self.client_core == self.server_core {
            return Err(format!(
                "--client-core and --server-core are both {}: give the client and the \
                 server their own cores",
                self.client_core
            ));
        }
        Ok(Settings {
            quick: self.quick,
            connect: self.connect.clone(),
            tabosd: self.tabosd.clone(),
            client_core: self.client_core,
            server_core: self.server_core,
        })
    }
}

impl InvokeArgs {
    fn config(&self, quick: bool) -> InvokeConfig {
        let mut config = if quick {
            InvokeConfig::quick()
        } else {
            InvokeConfig::full()
        };
        if let Some(calls) = self.calls {
            config.sequential_calls = calls;
        }
        if let Some(depths) = &self.depths {
            config.depths = depths.iter().map(|d| *d as usize).collect();
        }
        if let Some(seconds) = self.seconds_per_depth {
            config.per_depth = Duration::from_secs_f64(seconds);
        }
        config
    }
}

fn run(cli: &Cli, settings: &Settings) -> Result<(Vec<Record>, Vec<String>), Error> {
    match &cli.workload {
        Workload::Invoke(args) => {
            let records = invoke::run(settings, &args.config(settings.quick))?;
            let ratios = invoke::ratios(&records);
            Ok((records, ratios))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.global.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tabos-bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("machine: {}", Machine::detect());
    println!(
        "cores: client {}, server {}{}",
        settings.client_core,
        settings.server_core,
        if settings.quick {
            " (--quick: smoke-test sizes, not for reports)"
        } else {
            ""
        }
    );
    let (records, ratios) = match run(&cli, &settings) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("tabos-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    print!("{}", report::markdown_table(&records));
    if !ratios.is_empty() {
        println!();
        for line in &ratios {
            println!("- {line}");
        }
    }
    if let Some(path) = &cli.global.json {
        if let Err(e) = report::write_json(path, &records) {
            eprintln!("tabos-bench: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!(
            "tabos-bench: wrote {} records to {}",
            records.len(),
            path.display()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::parse_from(["tabos-bench", "invoke", "--quick", "--json", "x.json"]);
        assert!(cli.global.quick);
        assert_eq!(cli.global.json, Some(PathBuf::from("x.json")));
        let Workload::Invoke(args) = &cli.workload;
        assert_eq!(args.config(true), InvokeConfig::quick());
    }

    #[test]
    fn same_core_for_both_sides_is_refused() {
        let cli = Cli::parse_from(["tabos-bench", "--client-core", "1", "invoke"]);
        assert!(cli.global.settings().is_err());
        assert!(Cli::try_parse_from(["tabos-bench", "invoke", "--depths", "0"]).is_err());
    }
}
