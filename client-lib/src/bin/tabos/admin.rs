//! `tabos admin`: snapshots on demand and offline verification of a data directory.

use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tabos_client::{Client, Error};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Snapshot every partition of the node now and delete the log before each
    /// snapshot; prints each partition's LSN, file size and pause.
    Snapshot,
    /// Check a data directory offline (the node need not run; nothing is changed):
    /// every snapshot's checksum and every log record's checksum and LSN. Exits 1 on
    /// corruption, naming the file and offset. A torn tail (what a crash leaves) is
    /// reported but is not corruption: tabosd cuts it at start.
    Verify {
        /// The node's --data-dir.
        data_dir: PathBuf,
    },
}

pub fn run(client: &mut Client, cmd: AdminCommand) -> Result<ExitCode, Error> {
    match cmd {
        AdminCommand::Snapshot => {
            for partition in 0..client.partition_count() {
                let r = client.snapshot(partition)?;
                if r.written {
                    println!(
                        "p{}: snapshot at lsn {}: {} bytes, partition paused {} us, written in {} us",
                        r.partition, r.lsn, r.file_bytes, r.pause_us, r.write_us
                    );
                } else {
                    println!("p{}: durability is off: nothing written", r.partition);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Verify { data_dir } => Ok(verify(&data_dir)),
    }
}

pub fn verify(data_dir: &Path) -> ExitCode {
    match tabos_durability::verify_data_dir(data_dir) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("{}: ok", data_dir.display());
            ExitCode::SUCCESS
        }
        Err(corrupt) => {
            eprintln!("tabos: {corrupt}");
            ExitCode::from(1)
        }
    }
}
