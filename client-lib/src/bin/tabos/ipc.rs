//! `tabos ipc` subcommands.

use clap::Subcommand;
use std::process::ExitCode;
use tabos_client::{Client, Error};

/// `tabos ipc` subcommands.
#[derive(Subcommand, Debug)]
pub enum IpcCommand {}

/// Run one `tabos ipc` subcommand.
pub fn run(_client: &mut Client, command: IpcCommand) -> Result<ExitCode, Error> {
    match command {}
}
