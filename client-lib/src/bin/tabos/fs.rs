//! `tabos fs` subcommands.

use clap::Subcommand;
use std::process::ExitCode;
use tabos_client::{Client, Error};

/// `tabos fs` subcommands.
#[derive(Subcommand, Debug)]
pub enum FsCommand {}

/// Run one `tabos fs` subcommand.
pub fn run(_client: &mut Client, command: FsCommand) -> Result<ExitCode, Error> {
    match command {}
}
