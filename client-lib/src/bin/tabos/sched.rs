//! `tabos sched` subcommands.

use clap::Subcommand;
use std::process::ExitCode;
use tabos_client::{Client, Error};

/// `tabos sched` subcommands.
#[derive(Subcommand, Debug)]
pub enum SchedCommand {}

/// Run one `tabos sched` subcommand.
pub fn run(_client: &mut Client, command: SchedCommand) -> Result<ExitCode, Error> {
    match command {}
}
