//! `tabos`: the command line of a tabos node. See `tabos --help`.

mod admin;
mod fs;
mod ipc;
mod sched;
mod sql;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tabos_client::{Client, ConnectOptions, Error, DEFAULT_SOCKET};

/// Talk to a tabos node: status, procedure calls and the key-value table.
#[derive(Parser, Debug)]
#[command(name = "tabos", version)]
struct Cli {
    /// The node: a Unix socket path (shared memory) or HOST:PORT (TCP). Default:
    /// $TABOS_CONNECT, else /tmp/tabos.sock.
    #[arg(long, global = true, env = "TABOS_CONNECT", default_value = DEFAULT_SOCKET)]
    connect: PathBuf,

    /// File with the cluster secret, needed when --connect names HOST:PORT.
    #[arg(long, global = true, env = "TABOS_SECRET_FILE", value_name = "PATH")]
    secret_file: Option<PathBuf>,

    /// Act as USER instead of the connecting user (root only; give it before the
    /// subcommand, e.g. `tabos --as alice fs ls /alice`).
    #[arg(long = "as", value_name = "USER")]
    act_as: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the node, its partitions and cores, and per-partition call counts. Exits
    /// 1 when the node is unreachable.
    Status,
    /// Call a procedure by name (`null`, `echo`) and print its reply.
    Call {
        /// Procedure name.
        name: String,
        /// Argument text passed as the payload (e.g. for `echo`).
        #[arg(default_value = "")]
        payload: String,
        /// Partition to run on.
        #[arg(long, default_value_t = 0)]
        partition: u32,
    },
    /// The key-value table (partitioned on the key).
    #[command(subcommand)]
    Kv(KvCommand),
    /// The task scheduler: workers and tasks.
    #[command(subcommand)]
    Sched(sched::SchedCommand),
    /// Messages between tasks.
    #[command(subcommand)]
    Ipc(ipc::IpcCommand),
    /// The filesystem.
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Read-only SQL over every table of every partition and node, and the system
    /// tables (partitions, connections, procedures, log, nodes).
    ///
    /// One statement in SQLite's dialect. Tables: the services' tables (each with a
    /// `_partition` column naming the partition a row came from) and sys_partitions,
    /// sys_connections, sys_procedures, sys_log, sys_nodes; `--tables` lists them. An
    /// equality on a partition key (`_partition`, kv `key`, ipc `receiver_id`, a
    /// `/<user>/...` path or path prefix in fs_directory.d_name or
    /// fs_localized_file.f_name) reads that partition only. Each partition is read in
    /// chunks between its transactions: each chunk is consistent, the query is not a
    /// snapshot across chunks or partitions. Writes are refused: use the procedures.
    ///
    /// Example: tabos sql "SELECT d_name, content, size_bytes FROM fs_directory ORDER BY
    /// size_bytes DESC LIMIT 10"
    Sql(sql::SqlArgs),
    /// Durability administration: snapshots and offline checks of a data directory.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Store VALUE under KEY.
    Put { key: String, value: String },
    /// Print the value under KEY; exits 1 if there is none.
    Get { key: String },
    /// Delete KEY; exits 1 if there was none.
    Del { key: String },
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let options = ConnectOptions {
        act_as: cli.act_as.clone(),
        secret_file: cli.secret_file.clone(),
    };
    if let Command::Admin(admin::AdminCommand::Verify { data_dir }) = &cli.command {
        return Ok(admin::verify(data_dir)); // offline: no node needed
    }
    let mut client = Client::connect_with(&cli.connect, &options)?;
    match cli.command {
        Command::Admin(cmd) => return admin::run(&mut client, cmd),
        Command::Status => {
            let mut unreachable = 0;
            for (info, result) in client.cluster_status() {
                let place = if info.address.is_empty() {
                    info.socket.clone()
                } else {
                    info.address.clone()
                };
                let last = info.partition_base + info.partition_count - 1;
                match result {
                    Ok(stats) => {
                        println!(
                            "node {}: reachable at {place}, {} partitions ({}..={last})",
                            info.node_id, info.partition_count, info.partition_base
                        );
                        println!(
                            "{:>9}  {:>6}  {:>7}  {:>12}  {:>8}",
                            "partition", "core", "clients", "calls", "errors"
                        );
                        for s in stats {
                            let core = if s.core == u32::MAX {
                                "-".to_string()
                            } else {
                                s.core.to_string()
                            };
                            println!(
                                "{:>9}  {:>6}  {:>7}  {:>12}  {:>8}",
                                s.partition, core, s.clients, s.calls, s.errors
                            );
                        }
                    }
                    Err(e) => {
                        unreachable += 1;
                        println!(
                            "node {}: UNREACHABLE at {place}, partitions {}..={last}: {e}",
                            info.node_id, info.partition_base
                        );
                    }
                }
            }
            if unreachable > 0 {
                eprintln!("tabos: {unreachable} node(s) unreachable");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Call {
            name,
            payload,
            partition,
        } => {
            let registry = tabos_procs::registry();
            let Some(def) = registry.by_name(&name) else {
                let names: Vec<&str> = registry.iter().map(|d| d.name).collect();
                eprintln!(
                    "tabos: no procedure named `{name}`; known: {}",
                    names.join(", ")
                );
                return Ok(ExitCode::from(2));
            };
            let reply = client.call(def.id, partition, payload.as_bytes())?;
            println!("{}", String::from_utf8_lossy(&reply));
        }
        Command::Kv(KvCommand::Put { key, value }) => {
            client.kv_put(key.as_bytes(), value.as_bytes())?
        }
        Command::Kv(KvCommand::Get { key }) => match client.kv_get(key.as_bytes())? {
            Some(value) => println!("{}", String::from_utf8_lossy(&value)),
            None => {
                eprintln!("tabos: no value under key `{key}`");
                return Ok(ExitCode::from(1));
            }
        },
        Command::Sched(cmd) => return sched::run(&mut client, cmd),
        Command::Ipc(cmd) => return ipc::run(&mut client, cmd),
        Command::Fs(cmd) => return fs::run(&mut client, cmd),
        Command::Sql(args) => return Ok(sql::run(&mut client, args)),
        Command::Kv(KvCommand::Del { key }) => {
            if !client.kv_delete(key.as_bytes())? {
                eprintln!("tabos: no value under key `{key}`");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tabos: {e}");
            ExitCode::from(1)
        }
    }
}
